// Front-end of the remote_procedure_task example: the worker writes a sentence and asks
// the run script's Python about it (analyze_sentence in run_task.py) as often as they
// like, then submits the final sentence. The server's page loads /wrap_crowd_source.js,
// then this bundle, which renders into <div id="app">.

import { useState } from "react";
import { createRoot } from "react-dom/client";
import { getBlockedExplanation, useMephistoRemoteProcedureTask } from "mephisto-task";

const styles = {
  page: { fontFamily: "system-ui, sans-serif", maxWidth: "40em", margin: "2em auto", lineHeight: 1.5 },
  prompt: { fontSize: "1.2em" },
  text: { width: "100%", fontSize: "1.1em", boxSizing: "border-box" },
  buttons: { display: "flex", gap: "1em", margin: "1em 0" },
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

function Analysis({ result }) {
  return (
    <p id="analysis">
      <span id="analysis-words">{result.words}</span> words, tone{" "}
      <strong id="analysis-tone">{result.tone}</strong>
      {result.positive.length ? ` (positive: ${result.positive.join(", ")})` : ""}
      {result.negative.length ? ` (negative: ${result.negative.join(", ")})` : ""}
    </p>
  );
}

function Task({ taskData, analyze, onSubmit, disconnectIssueText }) {
  const [text, setText] = useState("");
  const [asking, setAsking] = useState(false);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [calls, setCalls] = useState(0);
  const [submitted, setSubmitted] = useState(false);
  const [submitError, setSubmitError] = useState(null);

  const ask = async () => {
    setAsking(true);
    setError(null);
    setCalls((n) => n + 1);
    try {
      setResult(await analyze({ text }));
    } catch (e) {
      // an {error} answer of the server (the function raised) or a lost connection
      setResult(null);
      setError(e.message);
    } finally {
      setAsking(false);
    }
  };

  const submit = async () => {
    setSubmitted(true);
    setSubmitError(null);
    try {
      await onSubmit({ text, analyses: calls, last_analysis: result });
    } catch (e) {
      setSubmitted(false);
      setSubmitError(e.message);
    }
  };

  if (submitted && submitError === null) {
    return (
      <Page title="Thank you">
        <p id="submitted">Your sentence was sent.</p>
      </Page>
    );
  }
  return (
    <Page title="Write a sentence">
      <p id="prompt" style={styles.prompt}>{taskData.prompt}</p>
      <textarea
        id="sentence"
        rows={3}
        style={styles.text}
        value={text}
        onChange={(e) => setText(e.target.value)}
        placeholder="Your sentence"
      />
      <div style={styles.buttons}>
        <button id="analyze" type="button" onClick={ask} disabled={asking}>
          {asking ? "Analyzing..." : "Analyze"}
        </button>
        <button id="submit" type="button" onClick={submit} disabled={text.trim() === ""}>
          Submit
        </button>
      </div>
      {result !== null ? <Analysis result={result} /> : null}
      {error !== null ? <p id="call-error" style={styles.error}>Could not analyze: {error}</p> : null}
      {submitError !== null ? <p id="submit-error" style={styles.error}>{submitError}</p> : null}
      {disconnectIssueText ? <p id="disconnected" style={styles.error}>{disconnectIssueText}</p> : null}
      <p style={styles.note}>Analyzed <span id="calls">{calls}</span> times.</p>
    </Page>
  );
}

function App() {
  const {
    taskConfig,
    isPreview,
    isLoading,
    initialTaskData,
    handleSubmit,
    blockedReason,
    blockedExplanation,
    remoteProcedure,
    disconnectIssueText,
  } = useMephistoRemoteProcedureTask();

  if (blockedReason !== null) {
    return (
      <Page title="Sorry">
        <p id="blocked">{blockedExplanation || getBlockedExplanation(blockedReason)}</p>
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
  return (
    <Task
      taskData={initialTaskData}
      analyze={remoteProcedure("analyze_sentence")}
      onSubmit={handleSubmit}
      disconnectIssueText={disconnectIssueText}
    />
  );
}

createRoot(document.getElementById("app")).render(<App />);
