import type { FastifyInstance } from 'fastify';

/**
 * In this plugin's routes every body arrives as bytes, whatever its Content-Type: uploads are sniffed, never trusted
 * by their header (a photo sent as application/json must not fail in the JSON parser).
 */
export function rawBodyParser(app: FastifyInstance, bodyLimit: number): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
}
