// Writes dist/ (build output, not committed):
//   dist/mephisto-task.esm.js          everything, ES module, `react` left as an import
//   dist/mephisto-task-core.global.js  core without React, IIFE defining window.MephistoTask
// Consumers with a bundler can use src/ directly; dist/ is for <script> tags and CDNs.

import { build } from "esbuild";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outdir = join(root, "dist");
const common = {
  bundle: true,
  sourcemap: true,
  target: ["es2018"], // old bundlers and browsers: no ?. / ?? / class fields in the output
  logLevel: "warning",
  legalComments: "none",
};

rmSync(outdir, { recursive: true, force: true });
await Promise.all([
  build({
    ...common,
    entryPoints: [join(root, "src/index.js")],
    outfile: join(outdir, "mephisto-task.esm.js"),
    format: "esm",
    external: ["react"],
  }),
  build({
    ...common,
    entryPoints: [join(root, "src/core.js")],
    outfile: join(outdir, "mephisto-task-core.global.js"),
    format: "iife",
    globalName: "MephistoTask",
    minify: true,
  }),
]);
console.log("mephisto-task: wrote dist/mephisto-task.esm.js and dist/mephisto-task-core.global.js");
