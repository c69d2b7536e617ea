// Protocol constants shared by the HTTP client, the socket client and the hooks.
// Values are the wire strings of docs/wire-protocol.md; do not change them.

/** Version reported as `?mephisto_task_version=` (kept equal to package.json by a test). */
export const libVersion = "2.99.0";

/** Agent statuses the server sends in `update_status` packets (`data.status`). */
export const AGENT_STATUS = Object.freeze({
  NONE: "none",
  ONBOARDING: "onboarding",
  WAITING: "waiting",
  IN_TASK: "in task",
  DONE: "done",
  DISCONNECT: "disconnect",
  TIMEOUT: "timeout",
  PARTNER_DISCONNECT: "partner disconnect",
  EXPIRED: "expired",
  RETURNED: "returned",
  MEPHISTO_DISCONNECT: "mephisto disconnect",
});

/** Worker-facing text for the statuses after which the task cannot go on. */
export const STATUS_TO_TEXT_MAP = Object.freeze({
  [AGENT_STATUS.EXPIRED]:
    "This task has expired and can no longer be completed. Please return it.",
  [AGENT_STATUS.TIMEOUT]:
    "This task timed out while waiting for your response and can no longer be " +
    "completed. Please return it.",
  [AGENT_STATUS.DISCONNECT]:
    "Your connection to the task server was lost. If you had done a lot of work, " +
    "please contact the requester so it can be looked at.",
  [AGENT_STATUS.RETURNED]:
    "This task was returned. If you had done a lot of work, please contact the " +
    "requester so it can be looked at.",
  [AGENT_STATUS.PARTNER_DISCONNECT]:
    "Another worker in this task left. This is not held against you: please " +
    "submit the task as it is.",
  [AGENT_STATUS.MEPHISTO_DISCONNECT]:
    "The task server stopped answering. If you had done a lot of work, please " +
    "contact the requester so it can be looked at.",
});

/** Values passed to `onConnectionStatusChange` / returned as `connectionStatus`. */
export const CONNECTION_STATUS = Object.freeze({
  FAILED: "failed",
  INITIALIZING: "initializing",
  WEBSOCKETS_FAILURE: "websockets_failure",
  CONNECTED: "connected",
  DISCONNECTED: "disconnected",
  RECONNECTING_ROUTER: "reconnecting_router",
  DISCONNECTED_ROUTER: "disconnected_router",
  RECONNECTING_SERVER: "reconnecting_server",
  DISCONNECTED_SERVER: "disconnected_server",
});

/** Websocket `packet_type` values. */
export const PACKET_TYPE = Object.freeze({
  ALIVE: "alive",
  HEARTBEAT: "heartbeat",
  UPDATE_STATUS: "update_status",
  CLIENT_BOUND_LIVE_UPDATE: "client_bound_live_update",
  MEPHISTO_BOUND_LIVE_UPDATE: "mephisto_bound_live_update",
});

/** `blockedReason` codes set by the client itself. */
export const BLOCKED_REASON = Object.freeze({
  NO_MOBILE: "no_mobile",
  NULL_AGENT_ID: "null_agent_id",
  NO_WEBSOCKETS: "no_websockets",
});
