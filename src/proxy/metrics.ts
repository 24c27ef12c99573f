/**
 * The proxy's counters and their Prometheus text exposition (GET /metrics). One instance per server;
 * plain fields so hot paths only increment numbers.
 *
 * Not here: HTTP routing, timing decisions.
 */
import type { CacheCounters } from './content-cache.js';

/** Values read when /metrics is rendered. */
export interface ProxyGauges {
  cacheBytes: number;
  traceUploadsRunning?: number;
  traceUploadsWaiting?: number;
  /** Images and layers being indexed right now. */
  indexing?: number;
  /** Staged layers whose background encoding is not finished (background-encoder.ts). */
  encodesPending?: number;
}

export class ProxyMetrics {
  /** Bytes of delta streams written (preamble, frames, content). */
  deltaBytesSent = 0;
  /** Bytes of /v1/content responses written. */
  contentBytesSent = 0;
  deltasServed = 0;
  deltasFailed = 0;
  contentRequests = 0;
  /** Layers indexed (blob fetched and read) and the seconds spent. */
  layersIndexed = 0;
  indexSeconds = 0;
  /** Layer blobs fetched from the registry (indexing and re-fetching evicted content). */
  registryBlobFetches = 0;
  registryErrors = 0;
  /** Contents filled from a peer replica's cache instead of the registry (--db, replica-sync.ts). */
  peerContentFetches = 0;
  /** Startup traces stored from POST /v1/traces. */
  tracesAccepted = 0;
  /** Items asked for by accepted POST /v1/sessions/<id>/next requests (queue jumps), and the requests. */
  sessionBumpItems = 0;
  sessionBumps = 0;
  readonly cache: CacheCounters = { hits: 0, misses: 0, evictions: 0, corrupt: 0 };

  constructor(private readonly gauges: () => ProxyGauges = () => ({ cacheBytes: 0 })) {}

  /** Prometheus text format 0.0.4. */
  render(): string {
    const g = this.gauges();
    const rows: [string, 'counter' | 'gauge', string, number][] = [
      ['starlight_proxy_delta_bytes_sent_total', 'counter', 'Bytes of delta streams sent', this.deltaBytesSent],
      ['starlight_proxy_content_bytes_sent_total', 'counter', 'Bytes of single-content responses sent', this.contentBytesSent],
      ['starlight_proxy_deltas_served_total', 'counter', 'Delta streams completed', this.deltasServed],
      ['starlight_proxy_deltas_failed_total', 'counter', 'Delta streams that failed', this.deltasFailed],
      ['starlight_proxy_content_requests_total', 'counter', 'Single-content requests', this.contentRequests],
      ['starlight_proxy_layers_indexed_total', 'counter', 'Layers indexed', this.layersIndexed],
      ['starlight_proxy_index_seconds_total', 'counter', 'Seconds spent indexing layers', this.indexSeconds],
      ['starlight_proxy_registry_blob_fetches_total', 'counter', 'Layer blobs fetched from the registry', this.registryBlobFetches],
      ['starlight_proxy_registry_errors_total', 'counter', 'Failed registry operations', this.registryErrors],
      ['starlight_proxy_peer_content_fetches_total', 'counter', 'Contents filled from a peer replica', this.peerContentFetches],
      ['starlight_proxy_traces_accepted_total', 'counter', 'Startup traces accepted', this.tracesAccepted],
      ['starlight_proxy_session_bumps_total', 'counter', 'Accepted queue-jump requests (POST /v1/sessions/<id>/next)', this.sessionBumps],
      ['starlight_proxy_session_bump_items_total', 'counter', 'Items asked for by accepted queue-jump requests', this.sessionBumpItems],
      ['starlight_proxy_cache_hits_total', 'counter', 'Content cache hits', this.cache.hits],
      ['starlight_proxy_cache_misses_total', 'counter', 'Content cache misses', this.cache.misses],
      ['starlight_proxy_cache_evictions_total', 'counter', 'Content cache evictions', this.cache.evictions],
      ['starlight_proxy_cache_corrupt_total', 'counter', 'Cache files that failed their digest check (dropped and re-fetched)', this.cache.corrupt],
      ['starlight_proxy_cache_bytes', 'gauge', 'Encoded bytes in the content cache', g.cacheBytes],
      ['starlight_proxy_trace_uploads_running', 'gauge', 'Trace uploads being read and stored', g.traceUploadsRunning ?? 0],
      ['starlight_proxy_trace_uploads_waiting', 'gauge', 'Trace uploads waiting for a slot', g.traceUploadsWaiting ?? 0],
      ['starlight_proxy_indexing', 'gauge', 'Images and layers being indexed', g.indexing ?? 0],
      ['starlight_proxy_background_encodes_pending', 'gauge', 'Staged layers not yet encoded into the content cache', g.encodesPending ?? 0],
    ];
    return rows.map(([name, type, help, v]) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${v}\n`).join('');
  }
}
