// useMephistoRemoteProcedureTask: call server-side functions of a remote_procedure
// blueprint over the live socket.
//
// Request (mephisto_bound_live_update): {request_id, target, args: "<JSON string>"}.
// Reply (client_bound_live_update):     {handles: <request_id>, response: "<JSON string>"}
//                                     or {handles: <request_id>, error: "<message>"}.

import React from "react";
import { AGENT_STATUS, STATUS_TO_TEXT_MAP } from "./constants.js";
import { MephistoError } from "./http.js";
import { useMephistoLiveTask } from "./react.js";
import { uuidv4 } from "./socket.js";

const FATAL_STATUSES = [
  AGENT_STATUS.DISCONNECT,
  AGENT_STATUS.RETURNED,
  AGENT_STATUS.EXPIRED,
  AGENT_STATUS.TIMEOUT,
  AGENT_STATUS.MEPHISTO_DISCONNECT,
];

function disconnectedError(reason) {
  const error = new MephistoError(`remote procedure unavailable: ${reason}`);
  error.disconnected = true;
  error.reason = reason;
  return error;
}

/**
 * useMephistoLiveTask that connects by itself once there is an agent and returns
 * `remoteProcedure(name)`: a function `(args) => Promise<parsed response>` (also
 * available as `.invoke`). An `error` answer rejects the promise with a
 * `MephistoError` whose message is the server's and whose `remote` is true. After a fatal agent status, `disconnectIssueText` is set and
 * calls reject with an error having `disconnected: true` and `reason`.
 * The raw socket functions are under `_fullSocketProps`.
 */
export function useMephistoRemoteProcedureTask(props = {}) {
  const pendingRef = React.useRef(new Map()); // request_id -> {resolve, reject}
  const [disconnectIssueText, setDisconnectIssueText] = React.useState(undefined);
  const disconnectRef = React.useRef(undefined);

  const failPending = (reason) => {
    const pending = Array.from(pendingRef.current.values());
    pendingRef.current.clear();
    for (const request of pending) request.reject(disconnectedError(reason));
  };

  const propsRef = React.useRef(props);
  propsRef.current = props;

  const live = useMephistoLiveTask(
    Object.assign({}, props, {
      onStatusUpdate: ({ status }) => {
        if (FATAL_STATUSES.includes(status) && disconnectRef.current === undefined) {
          disconnectRef.current = STATUS_TO_TEXT_MAP[status];
          setDisconnectIssueText(STATUS_TO_TEXT_MAP[status]);
          failPending(STATUS_TO_TEXT_MAP[status]);
        }
        if (propsRef.current.onStatusUpdate) propsRef.current.onStatusUpdate({ status });
      },
      onLiveUpdate: (update) => {
        const request = update ? pendingRef.current.get(update.handles) : undefined;
        if (request === undefined) {
          // not an answer to one of our calls: the app may want it
          if (propsRef.current.onLiveUpdate) propsRef.current.onLiveUpdate(update);
          return;
        }
        pendingRef.current.delete(update.handles);
        if (update.error !== undefined && update.error !== null) {
          // the server could not answer: unknown function, bad arguments, or it raised
          const error = new MephistoError(String(update.error));
          error.remote = true;
          request.reject(error);
          return;
        }
        let parsed;
        try {
          parsed = JSON.parse(update.response);
        } catch (e) {
          request.reject(new MephistoError(`remote procedure answer is not valid JSON: ${e.message}`));
          return;
        }
        request.resolve(parsed);
      },
    })
  );

  const { connect, destroy, sendLiveUpdate, ...otherProps } = live;
  const { agentId } = live;

  React.useEffect(() => {
    if (agentId) connect(agentId);
  }, [agentId]);

  const remoteProcedure = React.useCallback(
    (targetEvent) => {
      const procedure = (args) => {
        if (disconnectRef.current !== undefined) {
          return Promise.reject(disconnectedError(disconnectRef.current));
        }
        const requestId = uuidv4();
        return new Promise((resolve, reject) => {
          pendingRef.current.set(requestId, { resolve, reject });
          sendLiveUpdate({ request_id: requestId, target: targetEvent, args: JSON.stringify(args) })
            .catch((error) => {
              pendingRef.current.delete(requestId);
              reject(error);
            });
        });
      };
      procedure.invoke = procedure;
      return procedure;
    },
    [sendLiveUpdate]
  );

  return Object.assign({}, otherProps, {
    remoteProcedure,
    disconnectIssueText,
    _fullSocketProps: { connect, destroy, sendLiveUpdate },
  });
}
