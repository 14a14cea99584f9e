'use strict'
// What the client and the watch share: msgpack with 64-bit integers as
// BigInt both ways, requests built from natural JavaScript values (so that
// fleetqd's strict typing never shows), CURVE key files and the
// bookkeeping of a status watch.  No socket I/O here.

const fs = require('fs')
const { Encoder, Decoder } = require('@msgpack/msgpack')

const DEFAULT_ENDPOINT = 'tcp://127.0.0.1:5555'
const TERMINAL = new Set(['succeeded', 'failed', 'unknown', 'expired', 'cancelled', 'superseded'])

// Integer parameters and bool parameters (names are unique across
// fleetq's command table): 1 becomes true, '80' or 80.0 stays 80.
const INT_PARAMS = new Set(['percent', 'charging_amps', 'time', 'backup_reserve_percent',
  'off_grid_vehicle_charging_reserve_percent'])
const BOOL_PARAMS = new Set(['enable', 'on', 'manual_override', 'fan_only', 'enabled',
  'disallow_charge_from_grid_with_solar_installed'])

// Keys whose values are 64-bit counters or ids: always BigInt, whatever
// msgpack form carried them (fleetqd writes the shortest one).  Every
// other integer is a Number when it is safe, else a BigInt (never a
// rounded Number).
const BIG_KEYS = new Set(['site', 'seq', 'tseq', 'next', 'queue_seq'])

// undefined is left out, never sent as nil; BigInt goes out as a 64-bit
// integer.
const encoder = new Encoder({ useBigInt64: true, ignoreUndefined: true })
const decoder = new Decoder({ useBigInt64: true })

function pack (obj) {
  // Encode into the encoder's own buffer, then copy into a Buffer from
  // Node's pool: a fresh ArrayBuffer per message (what encode() returns)
  // costs more than the copy, in allocation and in garbage collection.
  const ref = encoder.encodeSharedRef(obj)
  const out = Buffer.allocUnsafe(ref.length)
  out.set(ref)
  return out
}

function normalize (v, key) {
  if (typeof v === 'bigint') {
    if (BIG_KEYS.has(key)) return v
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v
  }
  if (typeof v === 'number') {
    return BIG_KEYS.has(key) && Number.isInteger(v) ? BigInt(v) : v
  }
  if (Array.isArray(v)) return v.map((x) => normalize(x, key === 'events' ? undefined : key))
  if (v instanceof Uint8Array || v === null || typeof v !== 'object') return v
  for (const k in v) {
    const x = v[k]
    if (typeof x === 'bigint' || typeof x === 'object' || (typeof x === 'number' && BIG_KEYS.has(k))) v[k] = normalize(x, k)
  }
  return v
}

function unpack (buf) {
  return normalize(decoder.decode(buf), undefined)
}

function defaultPublish (endpoint) {
  // fleetqd's defaults are 5555 / 5556: tcp://host:N pairs with N+1.
  const m = /^(tcp:\/\/.+):(\d+)$/.exec(endpoint)
  return m ? `${m[1]}:${Number(m[2]) + 1}` : null
}

// ---- values ---------------------------------------------------------------

function text (name, v) {
  if (Buffer.isBuffer(v)) return v.toString('utf8')
  if (typeof v !== 'string') throw new TypeError(`${name}: expected a string, got ${typeof v}`)
  return v
}

function int (name, v) {
  if (typeof v === 'bigint') return v
  if (typeof v === 'string' && /^-?\d+$/.test(v.trim())) v = Number(v.trim())
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new TypeError(`${name}: expected an integer, got ${typeof v === 'number' ? v : typeof v}`)
  }
  if (!Number.isSafeInteger(v)) throw new RangeError(`${name}: ${v} is beyond 2^53: pass a BigInt`)
  return v
}

function bool (name, v) {
  if (typeof v === 'boolean') return v
  if (v === 0 || v === 1) return v === 1
  throw new TypeError(`${name}: expected a boolean (or 0 / 1), got ${String(v)}`)
}

function site (v) {
  let s
  if (typeof v === 'bigint') s = v
  else if (typeof v === 'string' && /^\d+$/.test(v)) s = BigInt(v)
  else if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) {
      throw new RangeError(`site: ${v} is beyond 2^53 and has lost digits already: pass the site id as a BigInt or a string`)
    }
    s = BigInt(v)
  } else throw new TypeError(`site: expected a BigInt, a safe integer or a string of digits, got ${typeof v}`)
  if (s <= 0n || s >= 2n ** 64n) throw new RangeError(`site: ${s} is not an energy site id (1 .. 2^64-1)`)
  return s
}

function jsonValue (name, v, depth = 0) {
  if (depth > 6) throw new RangeError(`${name}: nested too deeply`)
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return v
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new RangeError(`${name}: ${v} cannot be sent as JSON`)
    return v
  }
  if (typeof v === 'bigint') return v
  if (Array.isArray(v)) return v.filter((x) => x !== undefined).map((x) => jsonValue(name, x, depth + 1))
  if (typeof v === 'object' && !(v instanceof Uint8Array)) {
    const out = {}
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = jsonValue(name, x, depth + 1)
    return out
  }
  throw new TypeError(`${name}: ${typeof v} cannot be sent as JSON`)
}

function paramsValue (params) {
  if (params === undefined || params === null) return undefined
  if (typeof params !== 'object' || Array.isArray(params)) throw new TypeError('params: expected an object')
  const out = {}
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null) continue // "not given"; nil would be refused
    const name = `params.${k}`
    if (INT_PARAMS.has(k)) out[k] = int(name, v)
    else if (BOOL_PARAMS.has(k)) out[k] = bool(name, v)
    else out[k] = jsonValue(name, v)
  }
  return out
}

function pick (o, ...names) {
  for (const n of names) if (o[n] !== undefined && o[n] !== null) return o[n]
  return undefined
}

function submitRequest (a) {
  if (!a || typeof a !== 'object') throw new TypeError('submit: expected an object of fields')
  const vin = pick(a, 'vin')
  const st = pick(a, 'site')
  if ((vin === undefined) === (st === undefined)) throw new RangeError('give exactly one of vin and site')
  let key = pick(a, 'key')
  if (typeof key === 'number' || typeof key === 'bigint') key = String(key) // order numbers make good keys
  const m = { op: 'submit', tenant: text('tenant', a.tenant), key: text('key', key), account: text('account', a.account) }
  if (vin !== undefined) m.vin = text('vin', vin).toUpperCase()
  else m.site = site(st)
  m.command = text('command', a.command)
  const p = paramsValue(a.params)
  if (p && Object.keys(p).length) m.params = p
  const ttl = pick(a, 'ttlMs', 'ttl_ms')
  if (ttl !== undefined) m.ttl_ms = int('ttl_ms', ttl)
  const wake = pick(a, 'wake')
  if (wake !== undefined) m.wake = bool('wake', wake)
  const co = pick(a, 'coalesce')
  if (co !== undefined) m.coalesce = bool('coalesce', co)
  const nb = pick(a, 'notBefore', 'not_before')
  // A BigInt: the encoder writes a number beyond 2^32 as a float, which
  // fleetqd refuses for an integer field (unix ms are past 2^40).
  if (nb !== undefined) m.not_before = BigInt(int('not_before', nb instanceof Date ? nb.getTime() : nb))
  return m
}

function lookupRequest (op, a) {
  a = typeof a === 'string' ? { id: a } : (a || {})
  const m = { op }
  let key = pick(a, 'key')
  if (typeof key === 'number' || typeof key === 'bigint') key = String(key)
  if (pick(a, 'id') !== undefined) {
    if (key !== undefined) throw new RangeError('give either id or tenant + key, not both')
    m.id = text('id', a.id)
    if (pick(a, 'tenant') !== undefined) m.tenant = text('tenant', a.tenant)
    return m
  }
  if (pick(a, 'tenant') === undefined || key === undefined) throw new RangeError('give id, or tenant and key')
  m.tenant = text('tenant', a.tenant)
  m.key = text('key', key)
  return m
}

function historyRequest (shard, after, limit, tenant) {
  const m = { op: 'history', shard: int('shard', shard) }
  if (after !== undefined && after !== null) m.after = typeof after === 'bigint' ? after : BigInt(int('after', after))
  if (limit !== undefined && limit !== null) m.limit = int('limit', limit)
  if (tenant !== undefined && tenant !== null) m.tenant = text('tenant', tenant)
  return m
}

function waitBudgetMs (ttlMs, notBefore) {
  // The command's TTL (fleetqd's default 60 s) and 30 s for the last
  // answer, from notBefore for a scheduled command.
  const ahead = notBefore === undefined ? 0 : Math.max(0, Number(notBefore) - Date.now())
  return ahead + Number(ttlMs === undefined ? 60000 : ttlMs) + 30000
}

// ---- CURVE ----------------------------------------------------------------

const Z85 = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/

function z85 (what, v) {
  const s = Buffer.isBuffer(v) ? v.toString() : v
  if (typeof s !== 'string' || !Z85.test(s)) throw new RangeError(`${what}: not a 40-character Z85 CURVE key`)
  return s
}

function readKeyFile (path) {
  // Refused, as by fleetqd and the CLI, when a symlink or readable by
  // group or others: the secret key is what lets a service command cars.
  const st = fs.lstatSync(path)
  if (st.isSymbolicLink()) throw new Error(`${path}: key file is a symlink`)
  if (st.mode & 0o077) {
    throw new Error(`${path}: key file is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8)}; chmod 600 it)`)
  }
  let pub, sec
  for (const line of fs.readFileSync(path, 'ascii').split('\n')) {
    const parts = line.trim().split(/\s+/)
    if (parts.length === 2 && parts[0] === 'public') pub = z85(`${path}: public`, parts[1])
    if (parts.length === 2 && parts[0] === 'secret') sec = z85(`${path}: secret`, parts[1])
  }
  if (!pub || !sec) throw new Error(`${path}: want the lines "public <key>" and "secret <key>"`)
  return { publicKey: pub, secretKey: sec }
}

function curveOptions (curveKey, serverKey) {
  if (curveKey == null && serverKey == null) {
    curveKey = process.env.FLEETQ_CURVE_KEY || null
    serverKey = process.env.FLEETQ_SERVER_KEY || null
  }
  if (curveKey == null && serverKey == null) return null
  if (curveKey == null || serverKey == null) {
    throw new RangeError('CURVE needs both curveKey (your key pair) and serverKey (fleetqd\'s public key)')
  }
  let pair
  if (typeof curveKey === 'string') pair = readKeyFile(curveKey)
  else if (curveKey && curveKey.publicKey && curveKey.secretKey) {
    pair = { publicKey: z85('curveKey.publicKey', curveKey.publicKey), secretKey: z85('curveKey.secretKey', curveKey.secretKey) }
  } else throw new TypeError('curveKey: a key file path or {publicKey, secretKey}')
  return { curvePublicKey: pair.publicKey, curveSecretKey: pair.secretKey, curveServerKey: z85('serverKey', serverKey) }
}

// ---- status watch bookkeeping ----------------------------------------------

function eventDevice (ev) {
  return ev.vin !== undefined ? String(ev.vin) : String(ev.site)
}

// Positions of a watch per shard: each shard's seq without a tenant, the
// tenant's tseq with one (gap-free even where seq has gaps: a CURVE key
// limited to some tenants).  An event is passed on only when beyond its
// shard's position, so nothing twice; a jump is filled from history
// before the event that revealed it, so nothing is lost and each shard
// stays in order.
class WatchCore {
  constructor (tenant, device, cursor) {
    if (device != null && tenant == null) throw new RangeError('device needs tenant (topics are tenant/device)')
    this.tenant = tenant == null ? null : text('tenant', tenant)
    this.device = device == null ? null : String(device).toUpperCase()
    this.pos = new Map()
    for (const [k, v] of Object.entries(cursor || {})) this.pos.set(Number(k), BigInt(v))
    this.filled = 0
    this.skipped = 0
  }

  get topic () { return this.tenant == null ? '' : `${this.tenant}/` }

  position (ev) {
    const p = this.tenant == null ? ev.seq : ev.tseq
    return typeof p === 'bigint' ? p : (typeof p === 'number' ? BigInt(p) : null)
  }

  matches (ev) {
    if (this.tenant != null && ev.tenant !== this.tenant) return false
    return this.device == null || eventDevice(ev) === this.device
  }

  // ['dup'] | ['gap', after, upto] | ['new']
  live (ev) {
    const p = this.position(ev)
    if (typeof ev.shard !== 'number' || p === null) return ['new']
    const last = this.pos.get(ev.shard) ?? 0n // a shard not in a cursor starts at its first event
    if (p <= last) return ['dup']
    if (p > last + 1n) return ['gap', last, p]
    return ['new']
  }

  advance (ev) {
    const p = this.position(ev)
    if (typeof ev.shard !== 'number' || p === null) return true
    if (p <= (this.pos.get(ev.shard) ?? -1n)) {
      this.skipped++
      return false
    }
    this.pos.set(ev.shard, p)
    return true
  }

  fillRequest (shard, after, upto) {
    if (upto != null && after + 1n >= upto) return null
    const limit = upto == null ? 1000 : Number(upto - after - 1n > 1000n ? 1000n : upto - after - 1n)
    return historyRequest(shard, after, limit, this.tenant)
  }

  // [events within (after, upto), next after, done]
  fillPage (reply, after, upto) {
    const evs = (reply.events || []).filter((e) => {
      const p = this.position(e)
      return p !== null && p > after && (upto == null || p < upto)
    })
    let next = typeof reply.next === 'bigint' ? reply.next : after
    // By tenant `next` is the last tseq returned; without, the last seq
    // examined (a key limited to some tenants gets short pages, even
    // empty ones, while more follow).  No progress: caught up.
    const done = next <= after || (upto != null && next + 1n >= upto)
    if (next < after) next = after
    this.filled += evs.length
    return [evs, next, done]
  }

  // Positions up to which every event was yielded (or filtered out): the
  // tracked ones, except on a shard with events still waiting to be
  // yielded, where it is just before the first of them.
  cursor (unyielded) {
    const out = Object.fromEntries(this.pos)
    const seen = new Set()
    for (const ev of unyielded) {
      const p = this.position(ev)
      if (typeof ev.shard === 'number' && p !== null && !seen.has(ev.shard)) {
        seen.add(ev.shard)
        out[ev.shard] = p - 1n
      }
    }
    return out
  }

  probeRequest (shard, x) { return historyRequest(shard, x, 1, this.tenant) }

  probeResult (reply, x) {
    if (reply.events && reply.events.length) return true
    return this.tenant == null && typeof reply.next === 'bigint' && reply.next > x
  }
}

// Binary search of a shard's last position with one-event history
// probes (hasAfter(x): is there an event beyond x?), about 2 log2(n) calls.
async function searchLast (hasAfter) {
  if (!(await hasAfter(0n))) return 0n
  let hi = 1n
  while ((await hasAfter(hi)) && hi < 2n ** 62n) hi *= 2n
  let lo = hi / 2n
  while (hi - lo > 1n) {
    const mid = (lo + hi) / 2n
    if (await hasAfter(mid)) lo = mid
    else hi = mid
  }
  return hi
}

// ---- campaigns --------------------------------------------------------------

const CAMPAIGN_MAX_DEVICES = 100000
const CAMPAIGN_MAX_PARTS = 1000
// fleetqd's request body limit: larger device lists go in parts.
const BODY_LIMIT = 256 * 1024
const CAMPAIGN_FINAL = new Set(['done', 'aborted'])

// The device list as fleetqd wants it: {vin | site, account} each
// (defaultAccount fills the ones without), from such objects, VIN strings
// or site ids (BigInt or number).  A device listed twice is refused
// naming both positions.
function campaignDevices (devices, defaultAccount) {
  const out = []
  const seen = new Map()
  const dflt = defaultAccount === undefined || defaultAccount === null ? undefined : text('account', defaultAccount)
  let i = 0
  for (let d of devices) {
    if (typeof d === 'string') d = { vin: d }
    else if (typeof d === 'bigint' || typeof d === 'number') d = { site: d }
    else if (!d || typeof d !== 'object') throw new TypeError(`devices[${i}]: expected {vin | site, account}, a VIN or a site id`)
    const vin = pick(d, 'vin')
    const st = pick(d, 'site')
    if ((vin === undefined) === (st === undefined)) throw new RangeError(`devices[${i}]: give exactly one of vin and site`)
    const m = {}
    let dev
    if (vin !== undefined) {
      m.vin = text(`devices[${i}].vin`, vin).toUpperCase()
      dev = m.vin
    } else {
      m.site = site(st)
      dev = `site ${m.site}`
    }
    const acct = pick(d, 'account')
    m.account = acct !== undefined ? text(`devices[${i}].account`, acct) : dflt
    if (!m.account) throw new RangeError(`devices[${i}]: no account (give one, or account as the default)`)
    if (seen.has(dev)) throw new RangeError(`devices[${i}]: ${dev} is listed twice (first at devices[${seen.get(dev)}])`)
    seen.set(dev, i)
    out.push(m)
    i++
  }
  if (!out.length) throw new RangeError('devices: empty')
  if (out.length > CAMPAIGN_MAX_DEVICES) throw new RangeError(`devices: ${out.length} devices; a campaign takes at most ${CAMPAIGN_MAX_DEVICES}`)
  return out
}

function campaignHead (a) {
  let key = pick(a, 'key')
  if (typeof key === 'number' || typeof key === 'bigint') key = String(key)
  key = text('key', key)
  const kb = Buffer.byteLength(key)
  if (kb < 1 || kb > 100) throw new RangeError('key: a campaign key is 1..100 bytes (device commands get <key>/<vin or site>)')
  const m = { op: 'campaign', tenant: text('tenant', a.tenant), key, command: text('command', a.command) }
  const p = paramsValue(a.params)
  if (p && Object.keys(p).length) m.params = p
  const ttl = pick(a, 'ttlMs', 'ttl_ms')
  if (ttl !== undefined) m.ttl_ms = int('ttl_ms', ttl)
  const rate = pick(a, 'rate')
  if (rate !== undefined) {
    if (typeof rate !== 'number' || !(rate > 0) || rate > 100000) throw new RangeError(`rate: ${rate} is out of range (0 < rate <= 100000)`)
    m.rate = rate
  }
  const mfr = pick(a, 'maxFailureRatio', 'max_failure_ratio')
  if (mfr !== undefined) {
    if (typeof mfr !== 'number' || !(mfr >= 0 && mfr <= 1)) throw new RangeError(`maxFailureRatio: ${mfr} is out of range 0..1`)
    // A whole 0 or 1 goes as an integer: fleetqd's number fields take both.
    m.max_failure_ratio = mfr
  }
  const nb = pick(a, 'notBefore', 'not_before')
  if (nb !== undefined) m.not_before = BigInt(int('not_before', nb instanceof Date ? nb.getTime() : nb))
  return m
}

// The `campaign` requests of a device list: consecutive slices whose
// requests each fit partBytes (with `req` added), part 1..n of n when
// there is more than one.
function campaignParts (head, devices, partBytes = BODY_LIMIT) {
  const big = { ...head, part: CAMPAIGN_MAX_PARTS, parts: CAMPAIGN_MAX_PARTS, req: 2n ** 62n, devices: [] }
  const base = pack(big).length + 4
  const slices = []
  let start = 0
  let used = base
  for (let i = 0; i < devices.length; i++) {
    const n = pack(devices[i]).length
    if (base + n > partBytes) throw new RangeError(`devices[${i}]: does not fit in a request of ${partBytes} bytes`)
    if (used + n > partBytes) {
      slices.push([start, i])
      start = i
      used = base
    }
    used += n
  }
  slices.push([start, devices.length])
  if (slices.length > CAMPAIGN_MAX_PARTS) throw new RangeError(`${slices.length} parts needed, at most ${CAMPAIGN_MAX_PARTS}`)
  return slices.map(([a, b], k) => {
    const m = { ...head }
    if (slices.length > 1) {
      m.part = k + 1
      m.parts = slices.length
    }
    m.devices = devices.slice(a, b)
    return m
  })
}

function campaignRequests (a) {
  if (!a || typeof a !== 'object') throw new TypeError('campaign: expected an object of fields')
  const head = campaignHead(a)
  return campaignParts(head, campaignDevices(a.devices || [], a.account), a.partBytes ?? BODY_LIMIT)
}

function campaignFinal (m) {
  return m.final === true || CAMPAIGN_FINAL.has(m.state)
}

// A progress-event-shaped object from a campaign_get reply.
function campaignSnapshot (reply) {
  const ev = {}
  for (const [k, v] of Object.entries(reply)) if (k !== 'ok' && k !== 'req') ev[k] = v
  ev.type = 'campaign'
  if (ev.at === undefined) ev.at = Date.now()
  ev.final = CAMPAIGN_FINAL.has(reply.state)
  ev.snapshot = true
  return ev
}

function campaignProgressKey (m) {
  const counts = Object.entries(m.counts || {}).sort().map(([k, v]) => `${k}=${v}`).join(',')
  return `${m.state}|${counts}`
}

module.exports = {
  BODY_LIMIT,
  campaignDevices,
  campaignHead,
  campaignParts,
  campaignRequests,
  campaignFinal,
  campaignSnapshot,
  campaignProgressKey,
  DEFAULT_ENDPOINT,
  TERMINAL,
  pack,
  unpack,
  normalize,
  defaultPublish,
  submitRequest,
  lookupRequest,
  historyRequest,
  paramsValue,
  waitBudgetMs,
  curveOptions,
  readKeyFile,
  WatchCore,
  searchLast,
  text
}
