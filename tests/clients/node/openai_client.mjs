// Drive the official OpenAI Node SDK, unmodified, for llmtrace's end-to-end tests: one streamed
// chat completion consumed the way the SDK's documentation shows (`for await` over the stream).
//
// Provider host names resolve to the fake provider's loopback address (a dns.lookup override in
// this process only), so the SDK connects to the real name with the real SNI, exactly as an app
// would; the kernel hook redirects the connection to llmtrace. Trust comes from
// NODE_EXTRA_CA_CERTS. Prints one JSON object: what the SDK returned, or the error it raised.
//
// Usage: node openai_client.mjs --port PORT --address ADDRESS [--prompt TEXT]

import dns from "node:dns";
import { parseArgs } from "node:util";

import OpenAI from "openai";

const PROVIDER_HOSTS = new Set(["api.openai.com", "api.anthropic.com"]);

function resolveProvidersTo(address) {
  const real = dns.lookup;
  dns.lookup = (host, options, callback) => {
    return real.call(dns, PROVIDER_HOSTS.has(host) ? address : host, options, callback);
  };
}

async function stream(args) {
  const client = new OpenAI({
    baseURL: `https://api.openai.com:${args.port}/v1`,
    apiKey: "sk-test-llmtrace-0123456789abcdefABCDEF0123456789",
    maxRetries: 0,
    timeout: 20_000,
  });
  const chunks = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: args.prompt }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let model = null;
  let usage = null;
  for await (const chunk of chunks) {
    model = chunk.model;
    if (chunk.usage) {
      usage = { input: chunk.usage.prompt_tokens, output: chunk.usage.completion_tokens };
    }
    for (const choice of chunk.choices) {
      text += choice.delta?.content ?? "";
    }
  }
  return { model, text, usage };
}

async function main() {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      address: { type: "string" },
      prompt: { type: "string", default: "Say hello." },
    },
  });
  resolveProvidersTo(values.address);
  let out;
  try {
    out = { ...(await stream(values)), ok: true, pid: process.pid };
  } catch (e) {
    out = { ok: false, error: `${e.name}: ${e.message}${e.cause ? ` (${e.cause.cause?.code ?? e.cause.code ?? e.cause.message})` : ""}`, status: e.status ?? null, pid: process.pid };
  }
  console.log(JSON.stringify(out));
}

await main();
