// React bindings: useMephistoTask, useMephistoLiveTask, useMephistoSocket, ErrorBoundary,
// MephistoContext. Plain JavaScript (React.createElement, no JSX) and hooks only, so that
// any bundler can consume this file as it is. React >= 16.8.
//
// Same fields and flow as mephisto-task 2.0.4 (docs/wire-protocol.md section 3), plus:
// - handleSubmit / handleMetadataSubmit / handleFatalError return Promises that reject
//   with a MephistoError when the server refuses (2.0.4 returned nothing and hung);
// - handleSubmit(data, {files}) sends the multipart variant of /submit_task;
// - `loadError` holds the error when /task_config.json or /request_agent failed (2.0.4
//   stayed loading forever; `isLoading` still stays true here, so check loadError);
// - the callbacks are stable across renders and always act on the latest agent.

import React from "react";
import { BLOCKED_REASON } from "./constants.js";
import {
  MephistoError,
  collectMetadata,
  doesSupportWebsockets,
  getBlockedExplanation,
  getTaskConfig,
  isMobile,
  postCompleteOnboarding,
  postCompleteTask,
  postErrorLog,
  postMetadata,
  readProviderIdentity,
  requestAgent,
} from "./http.js";
import { MephistoSocket } from "./socket.js";

/** Empty context object, kept for apps that import it from mephisto-task. */
export const MephistoContext = React.createContext({});

function mergeState(state, update) {
  return Object.assign({}, state, update);
}

function initialTaskState(identity) {
  return {
    providerWorkerId: identity.providerWorkerId,
    mephistoWorkerId: null,
    agentId: null,
    mephistoAgentId: null,
    assignmentId: identity.assignmentId,
    taskConfig: null,
    isPreview: identity.isPreview,
    previewHtml: null,
    blockedReason: null,
    blockedExplanation: null,
    initialTaskData: null,
    isOnboarding: null,
    loaded: false,
    loadError: null,
  };
}

/** State update for an agent packet of /request_agent or /submit_onboarding. */
function stateFromAgentPacket(packet) {
  const data = packet.data;
  const agentId = data.agent_id;
  const workerId = data.worker_id === undefined ? null : data.worker_id;
  if (agentId === null) {
    return {
      agentId: null,
      isOnboarding: false,
      mephistoWorkerId: workerId,
      blockedReason: BLOCKED_REASON.NULL_AGENT_ID,
      blockedExplanation: data.failure_reason || null,
    };
  }
  return {
    agentId,
    mephistoAgentId: agentId,
    isOnboarding: agentId.startsWith("onboarding"),
    mephistoWorkerId: workerId,
    initialTaskData: data.init_task_data === undefined ? null : data.init_task_data,
    loaded: true,
  };
}

function noAgentError(action) {
  return new MephistoError(
    `cannot ${action}: there is no agent yet (preview, still loading, or blocked)`
  );
}

/**
 * The state of a task page: fetches the task config, registers the worker (unless
 * previewing or blocked), and gives the callbacks that submit.
 */
export function useMephistoTask() {
  const [identity] = React.useState(readProviderIdentity);
  const [state, setState] = React.useReducer(mergeState, identity, initialTaskState);
  const stateRef = React.useRef(state);
  stateRef.current = state;
  const mountedRef = React.useRef(false);
  const startedRef = React.useRef(false);

  const applyAgentPacket = React.useCallback((packet) => {
    if (mountedRef.current) setState(stateFromAgentPacket(packet));
  }, []);

  React.useEffect(() => {
    mountedRef.current = true;
    if (!startedRef.current) {
      startedRef.current = true; // once per component, also under StrictMode's double effects
      getTaskConfig()
        .then((taskConfig) => {
          if (!mountedRef.current) return undefined;
          const blocked = Boolean(taskConfig.block_mobile) && isMobile();
          const update = { taskConfig, loaded: identity.isPreview };
          if (blocked) update.blockedReason = BLOCKED_REASON.NO_MOBILE;
          setState(update);
          if (blocked || identity.isPreview) return undefined;
          return requestAgent().then(applyAgentPacket);
        })
        .catch((error) => {
          if (mountedRef.current) setState({ loadError: error });
        });
    }
    return () => {
      mountedRef.current = false;
    };
  }, []);

  const handleSubmit = React.useCallback((data, options) => {
    const { agentId, isOnboarding } = stateRef.current;
    if (!agentId) return Promise.reject(noAgentError("submit"));
    if (isOnboarding) {
      return postCompleteOnboarding(agentId, data).then((packet) => {
        applyAgentPacket(packet);
        return packet;
      });
    }
    return postCompleteTask(agentId, data, options ? options.files : undefined);
  }, []);

  const handleMetadataSubmit = React.useCallback((...items) => {
    const { agentId } = stateRef.current;
    if (!agentId) return Promise.reject(noAgentError("submit metadata"));
    return postMetadata(agentId, collectMetadata(items));
  }, []);

  const handleFatalError = React.useCallback(
    (errorData) => postErrorLog(stateRef.current.agentId, errorData),
    []
  );

  return Object.assign({}, state, {
    isLoading: !state.loaded,
    blockedExplanation:
      state.blockedExplanation ||
      (state.blockedReason ? getBlockedExplanation(state.blockedReason) : null),
    handleSubmit,
    handleMetadataSubmit,
    handleFatalError,
  });
}

/**
 * A MephistoSocket owned by the component: `{connect(agentId), destroy(), sendLiveUpdate(obj)}`.
 * Callbacks are read at call time, so they may change between renders. Unmounting closes it.
 */
export function useMephistoSocket({ onConnectionStatusChange, onLiveUpdate, onStatusUpdate, config } = {}) {
  const handlersRef = React.useRef(null);
  handlersRef.current = { onConnectionStatusChange, onLiveUpdate, onStatusUpdate, config };
  const socketRef = React.useRef(null);

  const getSocket = React.useCallback(() => {
    if (socketRef.current === null) {
      const call = (name) => (arg) => {
        const fn = handlersRef.current[name];
        if (fn) fn(arg);
      };
      socketRef.current = new MephistoSocket({
        onConnectionStatusChange: call("onConnectionStatusChange"),
        onLiveUpdate: call("onLiveUpdate"),
        onStatusUpdate: call("onStatusUpdate"),
        config: handlersRef.current.config,
      });
    }
    return socketRef.current;
  }, []);

  const destroy = React.useCallback(() => {
    const socket = socketRef.current;
    socketRef.current = null; // a later connect() starts a fresh socket
    if (socket) socket.destroy();
  }, []);

  React.useEffect(() => destroy, []);

  const connect = React.useCallback((agentId) => getSocket().connect(agentId), []);
  const sendLiveUpdate = React.useCallback((message) => getSocket().sendLiveUpdate(message), []);

  return { connect, destroy, sendLiveUpdate };
}

/**
 * useMephistoTask plus the live socket of `useMephistoSocket` (or of
 * `props.customConnectionHook`). The app calls `connect(agentId)` itself.
 * Props: `onLiveUpdate(data)`, `onStatusUpdate({status})`, `customConnectionHook`,
 * `socketConfig` (MephistoSocket config). `initialTaskData.past_live_updates` are replayed
 * through onLiveUpdate first; an update whose `update_id` was already delivered is skipped.
 */
export function useMephistoLiveTask(props = {}) {
  const propsRef = React.useRef(props);
  propsRef.current = props;
  const [connectionStatus, setConnectionStatus] = React.useState("");
  const [agentStatus, setAgentStatus] = React.useState(null);
  const deliveredRef = React.useRef(new Set());

  const taskProps = useMephistoTask();
  const { initialTaskData } = taskProps;

  const deliverLiveUpdate = React.useCallback((update) => {
    const id = update && typeof update === "object" ? update.update_id : undefined;
    if (id !== undefined && id !== null) {
      if (deliveredRef.current.has(id)) return;
      deliveredRef.current.add(id);
    }
    if (propsRef.current.onLiveUpdate) propsRef.current.onLiveUpdate(update);
  }, []);

  React.useEffect(() => {
    const past = initialTaskData && initialTaskData.past_live_updates;
    if (Array.isArray(past)) past.forEach(deliverLiveUpdate);
  }, [initialTaskData]);

  const handleStatusUpdate = React.useCallback((data) => {
    const status = data ? data.status : undefined;
    setAgentStatus(status);
    if (propsRef.current.onStatusUpdate) propsRef.current.onStatusUpdate({ status });
  }, []);

  const useConnectionHook = props.customConnectionHook || useMephistoSocket;
  const socketProps = useConnectionHook({
    onConnectionStatusChange: setConnectionStatus,
    onStatusUpdate: handleStatusUpdate,
    onLiveUpdate: deliverLiveUpdate,
    config: props.socketConfig,
  });

  const socketConfig = props.socketConfig || {};
  const blocked = !socketConfig.WebSocket && !doesSupportWebsockets()
    ? {
        blockedReason: BLOCKED_REASON.NO_WEBSOCKETS,
        blockedExplanation: getBlockedExplanation(BLOCKED_REASON.NO_WEBSOCKETS),
      }
    : {};

  return Object.assign({}, taskProps, socketProps, blocked, { connectionStatus, agentStatus });
}

/**
 * Catches render errors below it, shows them, and calls `props.handleError({error,
 * errorInfo})` (pass `handleFatalError` to report them to the server's /log_error).
 */
export class ErrorBoundary extends React.Component {
  constructor(props) {
    super(props);
    this.state = { error: null, errorInfo: null };
  }

  static getDerivedStateFromError(error) {
    return { error };
  }

  componentDidCatch(error, errorInfo) {
    this.setState({ error, errorInfo });
    if (this.props.handleError) {
      const result = this.props.handleError({
        error: error && error.message !== undefined ? error.message : String(error),
        errorInfo,
      });
      if (result && typeof result.catch === "function") {
        result.catch((e) => console.error("mephisto-task: could not report the error", e));
      }
    }
  }

  render() {
    if (this.state.error === null) return this.props.children;
    const h = React.createElement;
    const stack = this.state.errorInfo ? this.state.errorInfo.componentStack : "";
    return h(
      "div",
      { role: "alert" },
      h("h2", null, "Something went wrong on this page."),
      h("details", { style: { whiteSpace: "pre-wrap" } }, String(this.state.error), h("br"), stack)
    );
  }
}
