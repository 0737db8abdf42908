// A real Jaeger remote sampling client, driven by tests/e2e/remote_sampling.rs:
// the JaegerRemoteSampler of @opentelemetry/sampler-jaeger-remote polls
// tracegate's HTTP endpoint and samples root spans the way it was told.
//
// Usage: node client.js ENDPOINT SERVICE
// Reads one JSON command per stdin line:
//   {"expect": "<text the sampler's description must contain>",
//    "spans": {"<span name>": <how many root spans>, ...}}
// waits until the sampler has picked up a strategy whose description
// contains `expect`, starts and ends the spans, and prints one JSON line:
//   {"sampler": "<description>", "sampled": {"<span name>": <sampled>, ...}}
'use strict';

const readline = require('node:readline');
const { JaegerRemoteSampler } = require('@opentelemetry/sampler-jaeger-remote');
const {
  AlwaysOffSampler,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} = require('@opentelemetry/sdk-trace');

const [endpoint, serviceName] = process.argv.slice(2);
if (!endpoint || !serviceName) {
  console.error('usage: node client.js ENDPOINT SERVICE');
  process.exit(2);
}

const sampler = new JaegerRemoteSampler({
  endpoint,
  serviceName,
  // Nothing is sampled until the first strategy arrives.
  initialSampler: new AlwaysOffSampler(),
  poolingInterval: 50,
});
// Trace ids from a seeded generator (mulberry32), so the sampled counts,
// which the ratio sampler derives from the ids, are the same on every run:
// the test's 3-sigma bounds then cannot fail by chance.
let seed = 0x7261636b;
function next32() {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}
function hex(words) {
  let out = '';
  for (let i = 0; i < words; i++) out += next32().toString(16).padStart(8, '0');
  return out;
}
const idGenerator = { generateTraceId: () => hex(4), generateSpanId: () => hex(2) };
const exporter = new InMemorySpanExporter();
const processor = new SimpleSpanProcessor({ exporter });
const provider = new TracerProvider({ sampler, spanProcessors: [processor], idGenerator });
const tracer = provider.getTracer('tracegate-e2e');

async function waitFor(expect) {
  const deadline = Date.now() + 10000;
  while (!String(sampler).includes(expect)) {
    if (Date.now() > deadline) {
      throw new Error(`the sampler never became ${expect}: ${sampler}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function run(command) {
  await waitFor(command.expect);
  exporter.reset();
  for (const [name, count] of Object.entries(command.spans)) {
    for (let i = 0; i < count; i++) {
      tracer.startSpan(name).end();
    }
  }
  // The processor hands ended spans to the exporter asynchronously.
  await processor.forceFlush();
  const sampled = {};
  for (const name of Object.keys(command.spans)) {
    sampled[name] = exporter.getFinishedSpans().filter((s) => s.name === name).length;
  }
  return { sampler: String(sampler), sampled };
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  queue = queue
    .then(() => run(JSON.parse(line)))
    .then((result) => process.stdout.write(JSON.stringify(result) + '\n'))
    .catch((err) => {
      console.error(String(err && err.stack ? err.stack : err));
      process.exit(1);
    });
});
// The sampler polls on an interval for ever: leave once the test is done.
lines.on('close', () => queue.then(() => process.exit(0)));
