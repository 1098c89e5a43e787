// Builds adapter.js into a component: `node build.mjs <out.wasm>`.
// Every WASI feature of the engine is disabled, so the component imports
// nothing but the contract (the host's sandbox policy allows no files or
// sockets).
import { componentize } from "@bytecodealliance/componentize-js";
import { existsSync } from "node:fs";
import { writeFile, mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// The adapter targets contract 0.1: its frozen folder when versions have
// folders of their own, else the single one.
const wit = existsSync(resolve(here, "../../wit/0.1.0")) ? resolve(here, "../../wit/0.1.0") : resolve(here, "../../wit");
const out = resolve(process.argv[2] ?? resolve(here, "../../target/js-adapter/freellm_provider_js_openai.wasm"));
const { component } = await componentize({
  sourcePath: resolve(here, "adapter.js"),
  witPath: wit,
  worldName: "provider",
  disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.log(`${out}: ${component.byteLength} bytes`);
