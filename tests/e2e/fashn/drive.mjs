// Runs one call of the official FASHN SDK against a live predictd and prints the outcome as JSON.
// Usage: node drive.mjs '{"baseURL": "...", "apiKey": "...", "call": "run|status|subscribe", ...}'
import Fashn from 'fashn';

const request = JSON.parse(process.argv[2]);
const client = new Fashn({
  apiKey: request.apiKey,
  baseURL: request.baseURL,
  maxRetries: request.maxRetries ?? 0,
  timeout: request.timeoutMs ?? 30000,
});

async function call() {
  switch (request.call) {
    case 'run':
      return await client.predictions.run({ model_name: request.model, inputs: request.inputs });
    case 'status': {
      const { data, response } = await client.predictions.status(request.id).withResponse();
      return { ...data, creditsHeader: response.headers.get('x-fashn-credits-used') };
    }
    case 'subscribe': {
      const seen = [];
      const result = await client.predictions.subscribe({
        model_name: request.model,
        inputs: request.inputs,
        pollInterval: 50,
        timeout: 60000,
        onQueueUpdate: (update) => seen.push(update.status),
      });
      return { ...result, seen };
    }
    default:
      throw new Error(`unknown call ${request.call}`);
  }
}

try {
  const started = Date.now();
  const data = await call();
  console.log(JSON.stringify({ ok: true, data, elapsedMs: Date.now() - started }));
} catch (error) {
  console.log(JSON.stringify({
    ok: false,
    errorClass: error?.constructor?.name,
    status: error?.status ?? null,
    body: error?.error ?? null,
    message: String(error?.message ?? error),
  }));
}
