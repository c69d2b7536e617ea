// Front-end of the chat_task example: two workers paired in one assignment talk about a
// topic, then each presses Done. The `chat` blueprint's protocol (see
// mephisto/abstractions/blueprints/chat/__init__.py):
// - the page sends a live update {text} per message;
// - it receives {kind: "joined", you, workers} when the chat begins, then
//   {kind: "message", sender, mine, text, time} for every message, its own included;
// - agent status "waiting" until the partner joins, then "in task"; "partner disconnect"
//   (or another final status) when the chat cannot go on.
// The server's page loads /wrap_crowd_source.js, then this bundle, which renders into
// <div id="app">.

import { useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import {
  AGENT_STATUS,
  STATUS_TO_TEXT_MAP,
  getBlockedExplanation,
  useMephistoLiveTask,
} from "mephisto-task";

const MAX_MESSAGE = 5000; // characters; the server cuts longer messages

const styles = {
  page: { fontFamily: "system-ui, sans-serif", maxWidth: "40em", margin: "2em auto", lineHeight: 1.5 },
  topic: { fontSize: "1.2em" },
  log: {
    display: "flex",
    flexDirection: "column",
    gap: "0.5em",
    border: "1px solid #ccc",
    borderRadius: "6px",
    padding: "0.75em",
    minHeight: "12em",
    maxHeight: "24em",
    overflowY: "auto",
  },
  message: { maxWidth: "75%", padding: "0.4em 0.7em", borderRadius: "8px", background: "#eee" },
  mine: { alignSelf: "flex-end", background: "#d4e8ff", textAlign: "right" },
  theirs: { alignSelf: "flex-start" },
  sender: { fontSize: "0.8em", color: "#555" },
  compose: { display: "flex", gap: "0.5em", margin: "1em 0" },
  input: { flex: 1, fontSize: "1.05em" },
  error: { color: "#a00" },
  note: { color: "#555" },
};

function Page({ title, children }) {
  return (
    <main style={styles.page}>
      {title ? <h1>{title}</h1> : null}
      {children}
    </main>
  );
}

function MessageList({ messages }) {
  const end = useRef(null);
  useEffect(() => {
    if (end.current && end.current.scrollIntoView) end.current.scrollIntoView({ block: "nearest" });
  }, [messages.length]);
  return (
    <div id="messages" style={styles.log} aria-live="polite">
      {messages.length === 0 ? <p style={styles.note}>No messages yet: say hello.</p> : null}
      {messages.map((m, i) => (
        <div
          key={i}
          className={m.mine ? "message mine" : "message theirs"}
          data-mine={m.mine ? "true" : "false"}
          style={Object.assign({}, styles.message, m.mine ? styles.mine : styles.theirs)}
        >
          <div className="sender" style={styles.sender}>{m.mine ? `${m.sender} (you)` : m.sender}</div>
          <div className="text">{m.text}</div>
        </div>
      ))}
      <div ref={end} />
    </div>
  );
}

function Chat({ topic, me, messages, ended, endedText, onSend, onDone, connectionStatus }) {
  const [text, setText] = useState("");
  const [sendError, setSendError] = useState(null);
  const [submitting, setSubmitting] = useState(false);
  const [submitError, setSubmitError] = useState(null);
  const [submitted, setSubmitted] = useState(false);

  const send = () => {
    const trimmed = text.trim();
    if (!trimmed || ended || submitting) return;
    setText("");
    setSendError(null);
    onSend(trimmed).catch((e) => setSendError(e.message));
  };

  const done = async () => {
    setSubmitting(true);
    setSubmitError(null);
    try {
      await onDone();
      setSubmitted(true);
    } catch (e) {
      setSubmitError(e.message);
    } finally {
      setSubmitting(false);
    }
  };

  if (submitted) {
    return (
      <Page title="Thank you">
        <p id="submitted">Your chat was sent ({messages.length} messages).</p>
      </Page>
    );
  }
  const disabled = ended || submitting;
  return (
    <Page title="Chat">
      <p id="topic" style={styles.topic}>{topic}</p>
      {me ? <p id="me" style={styles.note}>You are {me}.</p> : null}
      <MessageList messages={messages} />
      {ended ? <p id="status-text" style={styles.error}>{endedText}</p> : null}
      <div style={styles.compose}>
        <input
          id="message"
          style={styles.input}
          value={text}
          maxLength={MAX_MESSAGE}
          disabled={disabled}
          placeholder={ended ? "The chat is over" : "Your message (Enter sends)"}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey) {
              e.preventDefault();
              send();
            }
          }}
        />
        <button id="send" type="button" onClick={send} disabled={disabled || text.trim() === ""}>
          Send
        </button>
        <button id="done" type="button" onClick={done} disabled={disabled}>
          Done
        </button>
      </div>
      {sendError !== null ? <p id="send-error" style={styles.error}>Not sent: {sendError}</p> : null}
      {submitError !== null ? <p id="submit-error" style={styles.error}>{submitError}</p> : null}
      {!ended && connectionStatus && connectionStatus !== "connected" ? (
        <p id="connection" style={styles.note}>Connection: {connectionStatus}</p>
      ) : null}
    </Page>
  );
}

function App() {
  const [messages, setMessages] = useState([]);
  const [me, setMe] = useState(null);
  const [begun, setBegun] = useState(false); // the chat began (stays true after it ends)

  const onLiveUpdate = (update) => {
    if (!update || typeof update !== "object") return;
    if (update.kind === "joined") {
      setMe(update.you);
    } else if (update.kind === "message") {
      const { sender, mine, text, time } = update;
      setMessages((old) => old.concat([{ sender, mine: Boolean(mine), text, time }]));
    }
  };

  const {
    taskConfig,
    isPreview,
    isLoading,
    agentId,
    initialTaskData,
    handleSubmit,
    blockedReason,
    blockedExplanation,
    loadError,
    connect,
    sendLiveUpdate,
    agentStatus,
    connectionStatus,
  } = useMephistoLiveTask({ onLiveUpdate });

  useEffect(() => {
    if (agentId) connect(agentId);
  }, [agentId]);

  useEffect(() => {
    if (agentStatus === AGENT_STATUS.IN_TASK) setBegun(true);
  }, [agentStatus]);

  if (blockedReason !== null) {
    return (
      <Page title="Sorry">
        <p id="blocked">{blockedExplanation || getBlockedExplanation(blockedReason)}</p>
      </Page>
    );
  }
  if (loadError) {
    return (
      <Page title="Sorry">
        <p id="load-error" style={styles.error}>The task could not be loaded: {loadError.message}</p>
      </Page>
    );
  }
  if (taskConfig === null) return <Page>Loading...</Page>;
  if (isPreview) {
    return (
      <Page title={taskConfig.task_title}>
        <p id="task-description">{taskConfig.task_description}</p>
        <p style={styles.note}>Accept the task to start.</p>
      </Page>
    );
  }
  if (isLoading || initialTaskData === null) return <Page>Loading your task...</Page>;

  const endedText = agentStatus ? STATUS_TO_TEXT_MAP[agentStatus] : undefined;
  if (endedText === undefined && agentStatus !== AGENT_STATUS.IN_TASK && !begun) {
    // no status yet (connecting), or waiting in the room for the partner
    return (
      <Page title="Chat">
        <p id="topic" style={styles.topic}>{initialTaskData.topic}</p>
        <p id="waiting">
          {agentStatus === AGENT_STATUS.WAITING ? "Waiting for your partner to join…" : "Connecting…"}
        </p>
      </Page>
    );
  }
  return (
    <Chat
      topic={initialTaskData.topic}
      me={me}
      messages={messages}
      ended={endedText !== undefined}
      endedText={endedText}
      connectionStatus={connectionStatus}
      onSend={(text) => sendLiveUpdate({ text })}
      onDone={() => handleSubmit({ messages })}
    />
  );
}

createRoot(document.getElementById("app")).render(<App />);
