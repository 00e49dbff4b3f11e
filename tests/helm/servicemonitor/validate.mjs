// Validates ServiceMonitor objects (JSON files given as arguments) against the
// monitoring.coreos.com/v1 schema generated from prometheus-operator's API types, as shipped
// by @kubernetes-models/prometheus-operator. The node_modules directory holding it is
// $SERVICEMONITOR_NODE_MODULES (tests/helm.sh installs it there with `npm ci`).
//
// Exit 0: every object is valid. Exit 1: one line per invalid object on stderr.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.env.SERVICEMONITOR_NODE_MODULES;
if (!modules) {
  console.error("SERVICEMONITOR_NODE_MODULES is not set");
  process.exit(2);
}
const entry = join(
  modules,
  "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
);
const { ServiceMonitor } = await import(pathToFileURL(entry).href);

let failed = 0;
for (const file of process.argv.slice(2)) {
  const object = JSON.parse(readFileSync(file, "utf8"));
  try {
    if (object.apiVersion !== "monitoring.coreos.com/v1" || object.kind !== "ServiceMonitor") {
      throw new Error(`not a monitoring.coreos.com/v1 ServiceMonitor: ${object.apiVersion} ${object.kind}`);
    }
    new ServiceMonitor(object).validate();
    console.log(`${file}: valid ServiceMonitor ${object.metadata?.name}`);
  } catch (error) {
    failed += 1;
    console.error(`${file}: ${error.message}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
