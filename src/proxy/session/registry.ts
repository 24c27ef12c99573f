/**
 * The live delta sessions of a proxy, by id (docs/protocol.md "Sessions"). An id is 24 url-safe
 * base64 characters of 18 random bytes: unguessable, so knowing a stream's id is the capability to
 * reorder it (besides the bearer token every /v1 request needs).
 *
 * Not here: the sending itself (session.ts), HTTP (session-handlers.ts).
 */
import { randomBytes } from 'node:crypto';
import type { DeltaSession } from './session.js';

export class SessionRegistry {
  private readonly live = new Map<string, DeltaSession>();

  /** A fresh id, never handed out by this registry before. */
  newId(): string {
    for (;;) {
      const id = randomBytes(18).toString('base64url');
      if (!this.live.has(id)) return id;
    }
  }

  add(s: DeltaSession): void {
    this.live.set(s.id, s);
  }

  get(id: string): DeltaSession | undefined {
    return this.live.get(id);
  }

  remove(s: DeltaSession): void {
    if (this.live.get(s.id) === s) this.live.delete(s.id);
  }

  get size(): number {
    return this.live.size;
  }
}
