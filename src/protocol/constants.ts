/**
 * Constants of the delta stream v1 (docs/protocol.md): media type, preamble, frame types, limits and
 * content encodings. Written by the proxy's encoder, read by the worker's decoder.
 *
 * Not here: frame layout code (frames.ts), streaming (encoder.ts / decoder.ts).
 */

/** Content-Type of GET /v1/delta responses. */
export const DELTA_MEDIA_TYPE = 'application/vnd.starlight.delta.v1';

/** First 4 bytes of every delta stream: ASCII "SLDT". */
export const MAGIC = Buffer.from('SLDT', 'ascii');
/** Wire version, u32 big-endian after MAGIC. Bump on any incompatible change of frames or header. */
export const PROTOCOL_VERSION = 1;
/** MAGIC + u32 version. */
export const PREAMBLE_BYTES = 8;

/** Frame types (u8). Every frame is: u8 type, u32 BE payload length, payload. */
export const FrameType = {
  /** msgpack DeltaHeader; exactly one, first after the preamble. */
  HEADER: 1,
  /** u32 item index, u64 offset into the item's encoded bytes, then the bytes. */
  CONTENT: 2,
  /** msgpack DeltaEnd; last frame of a complete stream. */
  END: 3,
  /** msgpack WireError; last frame of a stream that failed after the header was sent. */
  ERROR: 4,
  /**
   * u32 item index, u8 encoding, u64 encodedSize: the encoding of a `deferred` item, chosen at send
   * time; precedes that item's first CONTENT frame. Only in streams requested with `deferred=1`.
   */
  ITEM: 5,
  // 6 is reserved: it was EARLY (early items, removed in session 13: docs/design-notes.md issue 10).
  // Never reuse it; a decoder reports it as an unknown frame type.
  /**
   * msgpack DeltaImage (the resolved manifest, config and chain of the HEADER to come): sent first,
   * before the HEADER, as soon as the proxy resolved the image (docs/protocol.md "Image first"). Only
   * in streams requested with `image=1`.
   */
  IMAGE: 7,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** u8 type + u32 length. */
export const FRAME_HEAD_BYTES = 5;
/** u32 index + u64 offset at the start of a CONTENT payload. */
export const CONTENT_HEAD_BYTES = 12;
/** u32 index + u8 encoding + u64 encodedSize: an ITEM payload. */
export const ITEM_PAYLOAD_BYTES = 13;

/**
 * Encoded bytes per CONTENT frame (default 1 MiB): large items are split so that one big file does
 * not hold up the stream and neither side buffers more than a chunk.
 */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;
/** Largest CONTENT payload a decoder accepts (4 MiB data + head); bounds decoder memory. */
export const MAX_CONTENT_FRAME_BYTES = 4 * 1024 * 1024 + CONTENT_HEAD_BYTES;
/** Largest HEADER payload a decoder accepts by default (256 MiB: TOCs of ~1M files). */
export const MAX_HEADER_BYTES = 256 * 1024 * 1024;
/** Largest END/ERROR payload (64 KiB). */
export const MAX_TRAILER_BYTES = 64 * 1024;

/**
 * Per-item content encodings (on the wire as u8 in the header's item table). Chosen per file by the
 * proxy's content cache (docs/design-notes.md); the worker decodes before verifying the digest.
 */
export const ENCODINGS = ['identity', 'gzip', 'deflate-raw', 'br', 'zstd'] as const;
export type Encoding = (typeof ENCODINGS)[number];

export function encodingCode(e: Encoding): number {
  return ENCODINGS.indexOf(e);
}

/** Response header of GET /v1/content/<digest>: the item's encoding (one of ENCODINGS). Proxy writes, worker reads. */
export const HTTP_HEADER_ENCODING = 'starlight-encoding';
/** Response header of GET /v1/content/<digest>: the item's decoded size in bytes. */
export const HTTP_HEADER_RAW_SIZE = 'starlight-size';

/**
 * Response header of GET /v1/delta: the id of the proxy's sending session ([A-Za-z0-9_-]{1,64},
 * unguessable), for POST /v1/sessions/<id>/next (on-demand items jump the queue).
 */
export const HTTP_HEADER_SESSION = 'starlight-session';
/** Syntax of a session id. */
export const SESSION_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** Path prefix of the session API: POST `${SESSIONS_ROUTE}/<id>/next`. */
export const SESSIONS_ROUTE = '/v1/sessions';
/** Most item indices in one POST /v1/sessions/<id>/next body. */
export const MAX_SESSION_BUMP_ITEMS = 1024;
/** Largest POST /v1/sessions/<id>/next body, bytes (1024 indices fit easily). */
export const MAX_SESSION_BODY_BYTES = 64 * 1024;
