// The React-free client: protocol constants, HTTP requests and the live socket.
// Import as `mephisto-task/core`; also the entry of the `window.MephistoTask` build.

export * from "./constants.js";
export * from "./http.js";
export * from "./socket.js";
