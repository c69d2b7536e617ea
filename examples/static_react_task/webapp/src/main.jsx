// Front-end of the static_react_task example: rate a sentence as good or bad.
// The server's page loads /wrap_crowd_source.js, then this bundle, which renders into
// <div id="app">. Everything the task needs comes from useMephistoTask().

import { useState } from "react";
import { createRoot } from "react-dom/client";
import { useMephistoTask, getBlockedExplanation } from "mephisto-task";

import { styles } from "./styles.js";

// Onboarding: one question; the answer is submitted as {answer: ...} and checked by
// the run script against `correct_answer` of its config.
const ONBOARDING_SENTENCE = "Thsi sentense iz hard to raed.";

function Page({ title, children }) {
  return (
    <main style={styles.page}>
      {title ? <h1 style={styles.title}>{title}</h1> : null}
      {children}
    </main>
  );
}

// Good and Bad buttons: the first press submits {[field]: value} and disables both;
// `after(value)` is shown from then on.
function GoodOrBad({ field, onSubmit, after }) {
  const [chosen, setChosen] = useState(null);
  const choose = (value) => {
    setChosen(value);
    onSubmit({ [field]: value });
  };
  return (
    <>
      <div style={styles.buttons}>
        {["good", "bad"].map((value) => (
          <button
            key={value}
            type="button"
            name={field}
            value={value}
            style={styles[value]}
            disabled={chosen !== null}
            onClick={() => choose(value)}
          >
            {value === "good" ? "Good" : "Bad"}
          </button>
        ))}
      </div>
      {chosen !== null ? after(chosen) : null}
    </>
  );
}

function Preview({ taskConfig }) {
  return (
    <Page title={taskConfig.task_title}>
      <p id="task-description">{taskConfig.task_description}</p>
      <p style={styles.note}>Accept the task to start.</p>
    </Page>
  );
}

function Onboarding({ onSubmit }) {
  return (
    <Page title="Before you start">
      <p>
        In this task you read a sentence and rate it as good or bad. A sentence full of
        spelling mistakes is bad.
      </p>
      <p id="onboarding-question">Which rating fits this sentence?</p>
      <blockquote style={styles.sentence}>{ONBOARDING_SENTENCE}</blockquote>
      <GoodOrBad
        field="answer"
        onSubmit={onSubmit}
        after={() => <p style={styles.note}>Checking your answer...</p>}
      />
    </Page>
  );
}

function Task({ taskData, onSubmit }) {
  return (
    <Page title="Is this sentence good or bad?">
      <blockquote id="task-text" style={styles.sentence}>
        {taskData.text}
      </blockquote>
      <GoodOrBad
        field="rating"
        onSubmit={onSubmit}
        after={(rating) => (
          <p id="submitted" style={styles.note}>
            You rated it {rating}. Thank you, your answer was sent.
          </p>
        )}
      />
    </Page>
  );
}

function App() {
  const {
    taskConfig,
    isPreview,
    isLoading,
    isOnboarding,
    initialTaskData,
    handleSubmit,
    blockedReason,
    blockedExplanation,
  } = useMephistoTask();

  if (blockedReason !== null) {
    return (
      <Page title="Sorry">
        <p id="blocked">{blockedExplanation || getBlockedExplanation(blockedReason)}</p>
      </Page>
    );
  }
  if (taskConfig === null) {
    return <Page>Loading...</Page>;
  }
  if (isPreview) {
    return <Preview taskConfig={taskConfig} />;
  }
  if (isLoading || initialTaskData === null) {
    return <Page>Loading your task...</Page>;
  }
  if (isOnboarding) {
    return <Onboarding onSubmit={handleSubmit} />;
  }
  return <Task taskData={initialTaskData} onSubmit={handleSubmit} />;
}

createRoot(document.getElementById("app")).render(<App />);
