// The Vercel AI SDK against the gateway: `node vercel_ai.mjs PROVIDER SCENARIO`.
// PROVIDER: `responses` is @ai-sdk/openai's default `openai(model)`, the Responses API; `chat` is
// @ai-sdk/openai-compatible, chat completions. Reads AIKEYS_BASE_URL, AIKEYS_API_KEY and
// AIKEYS_MODEL; prints one JSON object: what the scenario saw, and `usage`, the [input, output]
// tokens of every step (one request each) as the SDK reported them.
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [providerName, scenario] = process.argv.slice(2);
const { AIKEYS_BASE_URL: baseURL, AIKEYS_API_KEY: apiKey, AIKEYS_MODEL: modelId } = process.env;

const providers = {
  responses: () => createOpenAI({ baseURL, apiKey })(modelId),
  chat: () =>
    createOpenAICompatible({
      name: "aikeys",
      baseURL,
      apiKey,
      includeUsage: true, // usage in streams too
      supportsStructuredOutputs: true, // generateObject sends a JSON schema, not just json_object
    })(modelId),
};
if (!(providerName in providers)) {
  console.error(`unknown provider ${providerName}; one of ${Object.keys(providers).join(", ")}`);
  process.exit(2);
}
const model = providers[providerName]();
const stepUsage = (steps) => steps.map((s) => [s.usage.inputTokens, s.usage.outputTokens]);
const Weather = z.object({ city: z.string(), celsius: z.number().int(), sunny: z.boolean() });

const scenarios = {
  async "generate-text"() {
    const r = await generateText({ model, prompt: "Hello", maxRetries: 0 });
    return { text: r.text, finish: r.finishReason, usage: stepUsage(r.steps) };
  },

  async "stream-text"() {
    const r = streamText({ model, prompt: "Hello there", maxRetries: 0 });
    let text = "";
    let parts = 0;
    for await (const delta of r.textStream) {
      text += delta;
      parts += 1;
    }
    return { text, parts, finish: await r.finishReason, usage: stepUsage(await r.steps) };
  },

  // A tool loop: the SDK runs `execute` and sends the result back until the model answers.
  async tools() {
    const calls = [];
    const r = await generateText({
      model,
      prompt: "What is the weather in Paris?",
      tools: {
        get_weather: tool({
          description: "The weather in a city.",
          inputSchema: z.object({ city: z.string() }),
          execute: async ({ city }) => {
            calls.push(city);
            return `sunny, 21 °C in ${city}`;
          },
        }),
      },
      stopWhen: stepCountIs(5),
      maxRetries: 0,
    });
    return { text: r.text, calls, steps: r.steps.length, usage: stepUsage(r.steps) };
  },

  async "generate-object"() {
    const r = await generateObject({
      model,
      schema: Weather,
      prompt: "Weather in Paris as JSON",
      maxRetries: 0,
    });
    return { object: r.object, usage: [[r.usage.inputTokens, r.usage.outputTokens]] };
  },
};

if (!(scenario in scenarios)) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
console.log(JSON.stringify(await scenarios[scenario]()));
