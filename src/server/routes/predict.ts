/**
 * The prediction contract (scripts depend on it; keep it exactly):
 *   POST /api/predict?model=<catalog name | path to .onnx | run folder | project id>&top=<k>
 *   body: the raw image bytes, any Content-Type (the type is sniffed from the bytes)
 *   200 {"predictions":[{"label", "probability"}, ...]} in descending probability; 4xx {"error": "..."}.
 */
import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.js';
import { sendError } from '../context.js';
import { RequestError } from '../predictors.js';
import { uploadFormat } from '../projects.js';
import { rawBodyParser } from './raw-body.js';

const PredictionsSchema = {
  type: 'object',
  properties: {
    predictions: {
      type: 'array',
      items: { type: 'object', properties: { label: { type: 'string' }, probability: { type: 'number' } }, required: ['label', 'probability'] },
    },
  },
  required: ['predictions'],
} as const;

const ErrorSchema = { type: 'object', properties: { error: { type: 'string' } }, required: ['error'] } as const;

export function topParam(raw: unknown, fallback = 5): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw new RequestError(`top=${String(raw)}: a whole number from 1 to 1000`, 400);
  return n;
}

export async function predictRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  rawBodyParser(app, ctx.limits.bodyBytes);
  app.post(
    '/api/predict',
    {
      schema: {
        summary: 'Classify one image',
        description: 'The raw image bytes as the body (any Content-Type: the format is sniffed). Concurrent requests are batched into one ONNX Runtime run.',
        querystring: {
          type: 'object',
          properties: {
            model: { type: 'string', description: 'catalog name, project id (its newest run), <project>/<run>, or a path to an .onnx file or run folder inside the allowed folders' },
            top: { type: 'string', description: 'how many classes to return (default 5)' },
          },
          required: ['model'],
        },
        response: { 200: PredictionsSchema, '4xx': ErrorSchema },
      },
    },
    async (req, reply) => {
      try {
        const q = req.query as { model?: string; top?: string };
        const top = topParam(q.top);
        const body = req.body;
        if (!Buffer.isBuffer(body) || body.length === 0) throw new RequestError('no image in the request body (send the image bytes as the body)', 400);
        uploadFormat(body);
        const predictor = await ctx.pool.get(q.model);
        const predictions = await predictor.predict(body, top, { maxPixels: ctx.limits.imagePixels });
        return { predictions: predictions.map((p) => ({ label: p.label, probability: p.probability })) };
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );
}
