// Copy the ES module and its stylesheet into the Python package (shipped in the wheel).
// There is no bundling step: the files in sglrp_widgets/static/ are byte-identical copies
// (tests/test_widget_static.py checks that).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dest = join(here, "..", "sglrp_widgets", "static");
mkdirSync(dest, { recursive: true });
for (const f of ["widget.js", "widget.css"]) {
  copyFileSync(join(here, f), join(dest, f));
  console.log(`copied js/${f} -> sglrp_widgets/static/${f}`);
}
