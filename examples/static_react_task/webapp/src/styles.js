// Inline styles: the bundle is the only file the page loads, so no stylesheet to serve.

const button = {
  fontSize: "1.1rem",
  padding: "0.5rem 1.5rem",
  marginRight: "1rem",
  border: "none",
  borderRadius: "4px",
  color: "white",
  cursor: "pointer",
};

export const styles = {
  page: {
    maxWidth: "40rem",
    margin: "2rem auto",
    fontFamily: "system-ui, sans-serif",
    lineHeight: 1.5,
  },
  title: { fontSize: "1.5rem" },
  sentence: {
    fontSize: "1.25rem",
    margin: "1rem 0",
    padding: "0.75rem 1rem",
    borderLeft: "4px solid #888",
    background: "#f4f4f4",
  },
  buttons: { margin: "1rem 0" },
  good: { ...button, background: "#2e7d32" },
  bad: { ...button, background: "#c62828" },
  note: { color: "#555" },
};
