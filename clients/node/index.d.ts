// Type declarations of fleetq-client.  The wire protocol is
// proto/wire-protocol.md in the fleetq repository.
//
// 64-bit counters and ids (site, seq, tseq, history's next, queue_seq)
// are always BigInt; other integers are numbers (a BigInt only in the
// impossible case of one beyond 2^53).  Fields of replies and events keep
// their wire names (snake_case).

export type State =
  | 'scheduled' | 'queued' | 'dispatching' | 'waking' | 'retrying' | 'sent'
  | 'succeeded' | 'failed' | 'unknown' | 'expired' | 'cancelled' | 'superseded'

export type TerminalState = 'succeeded' | 'failed' | 'unknown' | 'expired' | 'cancelled' | 'superseded'

export declare const TERMINAL: ReadonlySet<TerminalState>

/** A CURVE key pair, Z85 (40 characters each). */
export interface CurveKeyPair { publicKey: string; secretKey: string }

export interface ClientOptions {
  /** fleetqd's request endpoint (--listen). Default tcp://127.0.0.1:5555. */
  endpoint?: string
  /** With CURVE: the path of a key file of `fleetq curve-keygen` (refused when
   *  group or others may read it) or a key pair.  Without curveKey and
   *  serverKey, FLEETQ_CURVE_KEY / FLEETQ_SERVER_KEY are used when set. */
  curveKey?: string | CurveKeyPair
  /** With CURVE: fleetqd's public key (Z85). */
  serverKey?: string
  /** fleetqd's status endpoint (--publish); default: the TCP port of endpoint + 1. */
  publish?: string
  /** Milliseconds to wait for one reply before sending the request again. Default 10000. */
  timeout?: number
  /** How many times a request is sent again after a timeout, `busy` or
   *  `internal` (safe for submits: same key, deduplicated). Default 2. */
  retries?: number
}

/** A value fleetqd takes as a command parameter; nested objects (tou_settings) travel as JSON. */
export type ParamValue = boolean | number | bigint | string | null | ParamValue[] | { [k: string]: ParamValue | undefined }

export interface SubmitArgs {
  tenant: string
  /** Idempotency key, unique per tenant (a number is sent as its decimal string). */
  key: string | number | bigint
  account: string
  command: string
  /** Exactly one of vin and site. */
  vin?: string
  /** Energy site id: a BigInt or a string of digits above 2^53 (a number must be a safe integer). */
  site?: bigint | number | string
  /** undefined and null entries are left out. Integer and bool parameters accept '80', 80.0, 1 / 0. */
  params?: { [name: string]: ParamValue | undefined }
  ttlMs?: number | bigint
  ttl_ms?: number | bigint
  wake?: boolean | 0 | 1
  coalesce?: boolean | 0 | 1
  /** Schedule it (unix ms or a Date): state 'scheduled' until then; the TTL counts from then. */
  notBefore?: number | bigint | Date
  not_before?: number | bigint | Date
  /** Wait for the command to end: the reply then carries the terminal event. */
  wait?: boolean
  /** Milliseconds for the whole call (default: the retries; with wait, the TTL + 30 s). */
  timeout?: number
}

export interface Event {
  id: string
  tenant: string
  key: string
  vin?: string
  site?: bigint
  command: string
  state: State
  prev: State | null
  /** Unix milliseconds. */
  at: number
  attempt: number
  reason: string
  error: string | null
  http: number | null
  fault: number | null
  shard: number
  seq: bigint
  /** Absent in events stored by a fleetqd older than tseq. */
  tseq?: bigint
  [more: string]: unknown
}

export interface SubmitReply {
  ok: true
  id: string
  state: State
  dup: boolean
  req?: unknown
  /** With wait: true, the command's terminal event. */
  event?: Event
}

export interface Command {
  id: string
  tenant: string
  key: string
  account: string
  vin?: string
  site?: bigint
  command: string
  params: { [name: string]: unknown }
  state: State
  reason: string
  error: string | null
  http: number | null
  fault: number | null
  attempts: number
  created: number
  updated: number
  deadline: number
  ttl_ms: number
  /** Unix ms, when submitted with not_before. */
  not_before: number | null
  coalesce: boolean
  wake: boolean
  wakes: number
  shard: number
  transitions: { state: State; at: number }[]
  [more: string]: unknown
}

export type Lookup = string | { id: string; tenant?: string } | { tenant: string; key: string | number | bigint }

export interface HistoryArgs {
  shard: number
  /** Events after this seq (with tenant: tseq). */
  after?: bigint | number
  limit?: number
  tenant?: string
}

export interface HistoryReply { ok: true; events: Event[]; next: bigint; req?: unknown }
export interface PingReply { ok: true; version: string; shards: number; req?: unknown }

export type Health =
  | { ok: true; version: string; shards: number; latencyMs: number }
  | { ok: false; error: string; message: string }

export interface Account {
  id: string
  client_id: string
  region: string
  base_url: string
  scopes: string[]
  access_expires: number
  [more: string]: unknown
}

export interface WatchOptions {
  /** Only this tenant's events, tracked by tseq per shard. Without: every
   *  event the connection may see, tracked by seq per shard. */
  tenant?: string
  /** Only this device (VIN or site id), with tenant; filtered in the client
   *  so that no other event hides a loss. */
  device?: string | bigint | number
  /** Where to start: {shard: position} from an earlier watch's cursor; a
   *  shard missing from it starts at its first event.  Default: now. */
  cursor?: { [shard: number]: bigint }
  /** A stream quiet this long (ms) makes the watch look for events lost at
   *  the end of a burst. Default 500. */
  idleMs?: number
  /** ZMQ_RCVHWM of the subscriber (tests use 1 to force losses). */
  receiveHighWaterMark?: number
  /** ZMQ_RCVBUF of the subscriber. */
  receiveBufferSize?: number
}

/** Status events, each exactly once and in order per shard; what the
 *  stream dropped (slow consumer, fleetqd restart) is fetched with history. */
export declare class Watch implements AsyncIterable<Event> {
  /** Events fetched from history rather than received. */
  readonly filled: number
  /** Positions reached: pass as WatchOptions.cursor to resume. */
  readonly cursor: { [shard: number]: bigint }
  /** Find the start points and subscribe (done by the first next()). */
  start (): Promise<this>
  /** The next event, or null when none came within timeoutMs (undefined: wait). */
  next (timeoutMs?: number): Promise<Event | null>
  close (): void
  [Symbol.asyncIterator] (): AsyncIterator<Event>
}

export interface CallOptions { timeout?: number; retry?: boolean }

/** One device of a campaign: a vehicle or an energy site, and its account (or the campaign's default). */
export type CampaignDevice = string | bigint | number |
  { vin: string; site?: undefined; account?: string } | { site: bigint | number | string; vin?: undefined; account?: string }

export interface CampaignArgs {
  tenant: string
  /** 1..100 bytes; each device command gets the key `<key>/<vin or site>`. */
  key: string | number | bigint
  command: string
  /** Up to 100,000; sent in parts of at most 256 KiB (partBytes). */
  devices: Iterable<CampaignDevice>
  params?: { [name: string]: unknown }
  ttlMs?: number
  /** Device commands started per second (0 < rate <= 100000). */
  rate?: number
  /** Abort by itself once this share (0..1) of the finished devices failed (after 20). */
  maxFailureRatio?: number
  notBefore?: number | bigint | Date
  /** The account of the devices that name none. */
  account?: string
  /** Wait for each part's answer at most this long (ms). */
  timeout?: number
  partBytes?: number
}

export interface CampaignReply {
  ok: true
  id: string
  devices: number
  /** True when fleetqd had every part already. */
  dup: boolean
  state: 'receiving' | 'scheduled' | 'running' | 'done' | 'aborted'
  parts: number
  parts_received?: number
  [k: string]: unknown
}

export interface Campaign {
  id: string
  tenant: string
  key: string
  command: string
  state: 'receiving' | 'scheduled' | 'running' | 'done' | 'aborted'
  devices: number
  counts: { [state: string]: number }
  succeeded: number
  failed: number
  /** Device commands refused for good at the fan-out (their key used before for another request). */
  rejected?: number
  created_at: number
  started_at: number | null
  finished_at: number | null
  not_before: number | null
  rate: number | null
  max_failure_ratio: number | null
  parts_received: number
  parts: number
  reason: string
  [k: string]: unknown
}

/** A progress event (or, with snapshot: true, a campaign_get read by the watch). */
export interface CampaignEvent extends Partial<Campaign> {
  type: 'campaign'
  id: string
  state: Campaign['state']
  at: number
  final: boolean
  snapshot?: boolean
}

export interface CampaignLookup { id?: string; tenant?: string; key?: string | number }

export declare class CampaignWatch {
  readonly id: string | null
  readonly tenant: string | null
  /** The final event, once it came. */
  readonly final: CampaignEvent | null
  /** The next event; null after timeoutMs without one, or after the final one. */
  next (timeoutMs?: number): Promise<CampaignEvent | null>
  close (): void
  [Symbol.asyncIterator] (): AsyncIterator<CampaignEvent>
}

export declare class Client {
  constructor (opts?: string | ClientOptions)
  readonly endpoint: string
  readonly publish: string | null
  timeout: number
  retries: number
  /** Send one request object; resolves with its reply (ok: true) or rejects with the FleetqError of its code. */
  call (body: { op: string; [k: string]: unknown }, opts?: CallOptions): Promise<{ ok: true; [k: string]: any }>
  /** Pipeline requests (at most `window` in flight); each reply or its FleetqError, in order. */
  callMany (bodies: Iterable<{ op: string; [k: string]: unknown }>, opts?: { window?: number }): Promise<({ ok: true; [k: string]: any } | FleetqError)[]>
  submit (args: SubmitArgs & { wait: true }): Promise<SubmitReply & { event: Event }>
  submit (args: SubmitArgs): Promise<SubmitReply>
  submitMany (commands: Iterable<Omit<SubmitArgs, 'wait'>>, opts?: { window?: number; raiseErrors?: boolean }): Promise<(SubmitReply | FleetqError)[]>
  get (lookup: Lookup): Promise<Command>
  /** Rejects with NotCancellable (.state) once the command is being dispatched. */
  cancel (lookup: Lookup): Promise<Command>
  history (args: HistoryArgs): Promise<HistoryReply>
  ping (opts?: { timeout?: number }): Promise<PingReply>
  /** Never rejects for fleetq reasons: {ok: false, error: 'timeout'} when fleetqd does not answer. */
  health (opts?: { timeout?: number }): Promise<Health>
  watch (opts?: WatchOptions): Watch
  /** One command to many devices; resolves with the reply to the last part. */
  campaign (args: CampaignArgs): Promise<CampaignReply>
  campaignGet (lookup: CampaignLookup): Promise<Campaign>
  /** Cancels the device commands still scheduled or queued; rejects with NotCancellable once done. */
  campaignAbort (lookup: CampaignLookup): Promise<{ id: string; state: 'aborted'; cancelled: number; reason?: string }>
  /** Follow a campaign's progress events until the final one. */
  watchCampaign (args: CampaignLookup & { quietMs?: number; onProgress: (ev: CampaignEvent) => void | Promise<void> }): Promise<CampaignEvent>
  watchCampaign (args: CampaignLookup & { quietMs?: number }): CampaignWatch
  admin (action: string, fields?: { [k: string]: string | undefined }): Promise<{ ok: true; [k: string]: any }>
  accountAdd (a: { account: string; accessToken: string; refreshToken: string; clientId: string; region?: 'na' | 'eu' | 'cn'; baseUrl?: string }): Promise<Account>
  accountList (): Promise<Account[]>
  accountGet (account: string): Promise<Account>
  accountRemove (account: string): Promise<void>
  accountRetry (account: string): Promise<boolean>
  close (): void
}

export declare class FleetqError extends Error {
  constructor (message: string, code?: string, reply?: object | null)
  /** The fleetq error code ('bad_param', 'busy', 'timeout' ...). */
  readonly code: string
  /** The whole reply, when there was one. */
  readonly reply: { ok: false; error: string; message: string; [k: string]: unknown } | null
  /** Whether sending the same request again may succeed. */
  readonly retriable: boolean
}
export declare class BadRequest extends FleetqError {}
export declare class UnsupportedVersion extends FleetqError {}
export declare class UnknownCommand extends FleetqError {}
export declare class BadParam extends FleetqError {}
export declare class IdempotencyMismatch extends FleetqError {}
export declare class NotFound extends FleetqError {}
export declare class NotCancellable extends FleetqError { readonly state: State | undefined }
export declare class Forbidden extends FleetqError {}
export declare class Busy extends FleetqError {}
export declare class StorageFull extends FleetqError {}
export declare class TooLarge extends FleetqError {}
export declare class InternalError extends FleetqError {}
export declare class UnknownAccount extends FleetqError {}
export declare class Timeout extends FleetqError {}
export declare function errorFor (reply: { error?: string; message?: string }): FleetqError
