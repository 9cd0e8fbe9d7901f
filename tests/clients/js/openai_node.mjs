// The OpenAI Node SDK against the gateway: `node openai_node.mjs SCENARIO`.
// Reads OPENAI_BASE_URL and OPENAI_API_KEY (as the SDK does) and AIKEYS_MODEL; prints one JSON
// object: what the scenario saw, and `usage`, the [input, output] tokens of every request as the
// SDK received them. Any error exits non-zero with the SDK's message on stderr.
import OpenAI from "openai";
import { zodResponseFormat, zodTextFormat } from "openai/helpers/zod";
import { z } from "zod";

const [scenario] = process.argv.slice(2);
const model = process.env.AIKEYS_MODEL;
const client = new OpenAI({ maxRetries: 0, timeout: 30_000 });
const usage = [];
const chatUsage = (u) => usage.push([u.prompt_tokens, u.completion_tokens]);
const responsesUsage = (u) => usage.push([u.input_tokens, u.output_tokens]);

const cityParameters = {
  type: "object",
  properties: { city: { type: "string" } },
  required: ["city"],
  additionalProperties: false,
};
const weatherIn = (city) => `sunny, 21 °C in ${city}`;
const Weather = z.object({ city: z.string(), celsius: z.number().int(), sunny: z.boolean() });
const hello = [{ role: "user", content: "Hello" }];

const scenarios = {
  async chat() {
    const r = await client.chat.completions.create({ model, messages: hello });
    chatUsage(r.usage);
    return { text: r.choices[0].message.content, finish: r.choices[0].finish_reason };
  },

  async "chat-stream"() {
    const stream = await client.chat.completions.create({
      model,
      messages: hello,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) chatUsage(chunk.usage);
    }
    return { text, chunks };
  },

  async embeddings() {
    const r = await client.embeddings.create({ model, input: ["one", "two words"] });
    usage.push([r.usage.prompt_tokens, 0]);
    return { count: r.data.length, dimensions: r.data[0].embedding.length };
  },

  // The SDK's own tool loop: it calls the function and sends its result back.
  async "chat-tools"() {
    const calls = [];
    const runner = client.chat.completions.runTools({
      model,
      messages: [{ role: "user", content: "What is the weather in Paris?" }],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "The weather in a city.",
            parameters: cityParameters,
            parse: JSON.parse,
            function: ({ city }) => {
              calls.push(city);
              return weatherIn(city);
            },
          },
        },
      ],
    });
    runner.on("chatCompletion", (completion) => chatUsage(completion.usage));
    const text = await runner.finalContent();
    return { text, calls };
  },

  async "chat-parse"() {
    const r = await client.chat.completions.parse({
      model,
      messages: [{ role: "user", content: "Weather in Paris as JSON" }],
      response_format: zodResponseFormat(Weather, "weather"),
    });
    chatUsage(r.usage);
    return { parsed: r.choices[0].message.parsed };
  },

  async responses() {
    const r = await client.responses.create({ model, instructions: "Be brief.", input: "Hello" });
    responsesUsage(r.usage);
    return { text: r.output_text, status: r.status };
  },

  async "responses-stream"() {
    const stream = client.responses.stream({ model, input: "Hello there" });
    const kinds = [];
    let text = "";
    for await (const event of stream) {
      kinds.push(event.type);
      if (event.type === "response.output_text.delta") text += event.delta;
    }
    const final = await stream.finalResponse();
    responsesUsage(final.usage);
    return { text, final: final.output_text, kinds };
  },

  // A hand-written tool loop over the Responses API, as the SDK's docs show it.
  async "responses-tools"() {
    const tools = [
      {
        type: "function",
        name: "get_weather",
        description: "The weather in a city.",
        parameters: cityParameters,
        strict: true,
      },
    ];
    const input = [{ role: "user", content: "What is the weather in Paris?" }];
    const calls = [];
    for (let turn = 0; turn < 4; turn += 1) {
      const r = await client.responses.create({ model, input, tools, store: false });
      responsesUsage(r.usage);
      const wanted = r.output.filter((item) => item.type === "function_call");
      if (!wanted.length) return { text: r.output_text, calls };
      input.push(...r.output);
      for (const call of wanted) {
        const { city } = JSON.parse(call.arguments);
        calls.push(city);
        input.push({ type: "function_call_output", call_id: call.call_id, output: weatherIn(city) });
      }
    }
    throw new Error("the tool loop did not end");
  },

  async "responses-parse"() {
    const r = await client.responses.parse({
      model,
      input: "Weather in Paris as JSON",
      text: { format: zodTextFormat(Weather, "weather") },
    });
    responsesUsage(r.usage);
    return { parsed: r.output_parsed };
  },
};

if (!(scenario in scenarios)) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const result = await scenarios[scenario]();
console.log(JSON.stringify({ ...result, usage }));
