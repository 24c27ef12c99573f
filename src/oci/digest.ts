/**
 * Content verification: sha256 digests of buffers, and stream stages that check a blob's digest and
 * size as it flows (failing with SL_ERR_OCI_DIGEST_MISMATCH at the end, or as soon as it is too long)
 * or cut a byte range out of a full body.
 *
 * Not here: fetching (client.ts). Only sha256 is supported (references refuse other algorithms).
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { StarlightError } from '../errors.js';

/** The one sha256 digest pattern, 'sha256:<64 lower-case hex>', unanchored (to compose; see isDigest). */
export const SHA256_DIGEST_PATTERN = 'sha256:[0-9a-f]{64}';
const SHA256_DIGEST_RE = new RegExp(`^${SHA256_DIGEST_PATTERN}$`);

/** True if `digest` is a well-formed 'sha256:<64 hex>' digest. */
export function isDigest(digest: unknown): digest is string {
  return typeof digest === 'string' && SHA256_DIGEST_RE.test(digest);
}

/** 'sha256:<hex>' of `data`. */
export function sha256Digest(data: Buffer | Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** What a verified thing is, for messages ('blob sha256:… of image …'). */
export interface VerifyContext {
  subject: string;
  details?: Record<string, unknown>;
}

function mismatch(ctx: VerifyContext, expected: { digest: string; size: number }, what: string): StarlightError {
  return new StarlightError(
    'SL_ERR_OCI_DIGEST_MISMATCH',
    `${ctx.subject}: ${what}; the registry serves corrupt data, re-push the image or use another mirror`,
    { details: { ...ctx.details, digest: expected.digest, size: expected.size } },
  );
}

/** Throws SL_ERR_OCI_DIGEST_MISMATCH unless `data` has `expected.digest` (and size, when given). */
export function verifyBuffer(data: Buffer, expected: { digest: string; size?: number }, ctx: VerifyContext): void {
  const size = expected.size ?? data.length;
  if (data.length !== size) throw mismatch(ctx, { digest: expected.digest, size }, `got ${data.length} bytes, expected ${size}`);
  const actual = sha256Digest(data);
  if (actual !== expected.digest) throw mismatch(ctx, { digest: expected.digest, size }, `content has digest ${actual}`);
}

/** A pass-through that hashes and counts; errors (and so destroys the pipeline) on mismatch. */
export class VerifyingStream extends Transform {
  private readonly hash = createHash('sha256');
  private seen = 0;

  constructor(
    private readonly expected: { digest: string; size: number },
    private readonly ctx: VerifyContext,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.expected.size) {
      cb(mismatch(this.ctx, this.expected, `more than the expected ${this.expected.size} bytes`));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.seen !== this.expected.size) {
      cb(mismatch(this.ctx, this.expected, `got ${this.seen} bytes, expected ${this.expected.size}`));
      return;
    }
    const actual = `sha256:${this.hash.digest('hex')}`;
    cb(actual === this.expected.digest ? null : mismatch(this.ctx, this.expected, `content has digest ${actual}`));
  }
}

/** Passes bytes [start, end) of its input and drops the rest (for servers that ignore Range). */
export class SliceStream extends Transform {
  private pos = 0;

  constructor(
    private readonly from: number,
    private readonly to: number,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const from = Math.max(0, this.from - this.pos);
    const to = Math.min(chunk.length, this.to - this.pos);
    this.pos += chunk.length;
    cb(null, to > from ? chunk.subarray(from, to) : undefined);
  }
}

/** Errors at the end if fewer or more than `length` bytes passed (a short 206 body is data loss). */
export class LengthCheckStream extends Transform {
  private seen = 0;

  constructor(
    private readonly length: number,
    private readonly ctx: VerifyContext,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.length) {
      cb(new StarlightError('SL_ERR_OCI_REGISTRY', `${this.ctx.subject}: range response longer than the ${this.length} bytes asked for`, {
        details: this.ctx.details,
      }));
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    cb(
      this.seen === this.length
        ? null
        : new StarlightError('SL_ERR_OCI_REGISTRY', `${this.ctx.subject}: range response ended after ${this.seen} of ${this.length} bytes`, {
            details: this.ctx.details,
          }),
    );
  }
}
