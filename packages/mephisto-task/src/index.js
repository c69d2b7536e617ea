// mephisto-task: the worker-side client of the task server, import-compatible with the
// public mephisto-task 2.x package. Everything in ./core.js plus the React hooks.

export * from "./core.js";
export {
  ErrorBoundary,
  MephistoContext,
  useMephistoLiveTask,
  useMephistoSocket,
  useMephistoTask,
} from "./react.js";
export { useMephistoRemoteProcedureTask } from "./remote.js";
