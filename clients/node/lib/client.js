'use strict'
// The fleetq client: one DEALER socket to fleetqd's request endpoint,
// shared by every call (replies matched by `req`, so concurrent calls
// pipeline by themselves), and SUB sockets to its status endpoint for
// watch() and submit({wait: true}).

const zmq = require('zeromq')
const C = require('./common')
const { FleetqError, NotFound, Timeout, errorFor } = require('./errors')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const { performance } = require('perf_hooks')
const now = () => performance.now()

// One receive() at a time on a zeromq.js socket: keep the pending one
// across timeouts instead of starting another.
class Inbox {
  constructor (sock) {
    this.sock = sock
    this.pending = null
  }

  async next (ms) {
    if (!this.pending) this.pending = this.sock.receive()
    let timer
    const t = new Promise((resolve) => { timer = setTimeout(() => resolve(null), Math.max(0, ms)) })
    try {
      const r = await Promise.race([this.pending, t])
      if (r !== null) this.pending = null
      return r
    } finally {
      clearTimeout(timer)
    }
  }
}

class Client {
  // new Client('tcp://127.0.0.1:5555') or new Client({endpoint, curveKey,
  // serverKey, publish, timeout, retries}); see index.d.ts.
  constructor (opts = {}) {
    if (typeof opts === 'string') opts = { endpoint: opts }
    this.endpoint = opts.endpoint || C.DEFAULT_ENDPOINT
    this.publish = opts.publish || C.defaultPublish(this.endpoint)
    this.timeout = opts.timeout ?? 10000
    this.retries = opts.retries ?? 2
    this._curve = C.curveOptions(opts.curveKey, opts.serverKey)
    // A DEALER with no connection waits in send, and libzmq drops the
    // connection fleetqd refused (an unlisted or removed CURVE key, a wrong
    // server key): sendTimeout ends such a send after `timeout` ms, and the
    // request (with those queued behind it) fails with Timeout instead of
    // going out whenever a connection comes, long after its caller gave up.
    this._sock = this._dealer()
    // Random start: a late reply to another process's request on a reused
    // connection is never taken for ours.
    this._next = Math.floor(Math.random() * 2 ** 40) + 1
    this._waiting = new Map() // req -> deferred of a call
    this._batches = new Set() // callMany batches (each knows its reqs)
    this._reader = null
    this._outq = []
    this._pumping = false
    this._closed = false
    this._watches = new Set()
  }

  _dealer () {
    const sock = new zmq.Dealer({ linger: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0, sendTimeout: Math.max(1, this.timeout), ...(this._curve || {}) })
    sock.connect(this.endpoint)
    return sock
  }

  // libzmq does not try again after a refused handshake: a fresh socket
  // does, so that a key listed later (a SIGHUP of the clients file) gets in
  // without a new Client.  The old socket's reader ends with it.
  _renew () {
    const old = this._sock
    this._sock = this._dealer()
    if (!old.closed) old.close()
    if (this._reader) this._reader = this._read()
  }

  // Closes the socket and every watch of this client (their subscribers
  // would keep the process alive).
  close () {
    this._closed = true
    for (const w of this._watches) w.close()
    for (const d of new Set(this._waiting.values())) d.resolve(null)
    this._waiting.clear()
    if (!this._sock.closed) this._sock.close()
  }

  // ---- requests -------------------------------------------------------------

  async _read () {
    try {
      for await (const frames of this._sock) { // this socket, until it closes
        let reply
        try {
          reply = C.unpack(frames[frames.length - 1])
        } catch (e) {
          continue
        }
        if (reply) this._deliver(reply)
      }
    } catch (e) {
      // the socket was closed
    }
  }

  // Hand a reply (or an UNSENT note) to the call or batch waiting for it.
  _deliver (reply) {
    const d = this._waiting.get(reply.req)
    if (d) {
      d.resolve(reply)
      return
    }
    for (const b of this._batches) {
      if (b.owner.has(reply.req)) {
        b.resolve(reply)
        return
      }
    }
  }

  _unsentMessage () {
    return `cannot send to ${this.endpoint} within ${this.timeout} ms: no connection ` +
      '(fleetqd is down, or it refused this client: check the CURVE key is in ' +
      "fleetqd's clients file and the server key is fleetqd's)"
  }

  // body is ours to change (built by this client, or a caller's copied):
  // setting req in place keeps the object's shape, which the encoder is
  // several times faster on than a spread copy.
  _send (body) {
    const req = this._next++
    body.req = req
    this._outq.push(C.pack(body), req)
    if (!this._pumping) this._pump()
    return req
  }

  // zeromq.js takes one send at a time (the next only once the previous
  // promise settled, even when it was queued at once): one pump feeds the
  // socket from a queue of (message, req) pairs.  A send that times out
  // (no connection) fails its request and every one queued behind it: each
  // would wait as long again.
  async _pump () {
    this._pumping = true
    let q = []
    let i = 0
    try {
      while (this._outq.length) {
        q = this._outq
        this._outq = []
        for (i = 0; i < q.length; i += 2) await this._sock.send(q[i])
      }
    } catch (e) {
      const unsent = q.slice(i).concat(this._outq)
      this._outq = []
      if (e && e.code === 'EAGAIN' && !this._closed) {
        const msg = this._unsentMessage()
        for (let k = 1; k < unsent.length; k += 2) this._deliver({ req: unsent[k], unsent: msg })
        this._renew()
      } // else the socket was closed
    } finally {
      this._pumping = false
    }
  }

  // Send one request object and resolve with its reply (ok: true), or
  // reject with the FleetqError of its code.  Without a reply within
  // `timeout` ms the same request is sent again (at most `retries` times,
  // within opts.timeout ms in all); a reply to any copy is taken.
  async call (body, opts = {}) {
    return this._call(Object.assign({}, body), opts)
  }

  async _call (body, opts = {}) {
    if (this._closed) throw new FleetqError('client closed', 'closed')
    if (!this._reader) this._reader = this._read()
    const budget = opts.timeout ?? this.timeout * (this.retries + 1)
    const retry = opts.retry ?? true
    const deadline = now() + budget
    const reqs = []
    let tries = 0
    let d = deferred()
    try {
      for (;;) {
        const req = this._send(body)
        reqs.push(req)
        this._waiting.set(req, d)
        tries++
        const reply = await withTimeout(d.promise, Math.max(1, Math.min(this.timeout, deadline - now())))
        const more = retry && tries <= this.retries && now() < deadline
        if (reply === null) {
          if (this._closed) throw new FleetqError('client closed', 'closed')
          if (more) continue
          throw new Timeout(`no reply from ${this.endpoint} within ${budget} ms (${tries} attempt${tries > 1 ? 's' : ''})`)
        }
        if (reply.unsent) throw new Timeout(reply.unsent)
        if (reply.ok) return reply
        const err = errorFor(reply)
        if (err.retriable && more) {
          d = deferred()
          for (const r of reqs) this._waiting.set(r, d)
          await sleep(Math.min(50 * 2 ** tries, 1000))
          continue
        }
        throw err
      }
    } finally {
      for (const r of reqs) this._waiting.delete(r)
    }
  }

  // Pipeline many requests, at most `window` at once, on this connection;
  // resolves with each reply or the FleetqError it turned into, in order.
  // Requests unanswered for `timeout` ms are sent again (at most `retries`
  // times), `busy` ones after a pause.  One batch of replies, no promise
  // per request: this is the fast path for bulk submits.
  async callMany (bodies, opts = {}) {
    return this._callMany(Array.from(bodies, (b) => Object.assign({}, b)), opts)
  }

  async _callMany (list, opts = {}) {
    if (this._closed) throw new FleetqError('client closed', 'closed')
    if (!this._reader) this._reader = this._read()
    const n = list.length
    const out = new Array(n)
    const window = opts.window ?? 1000
    const owner = new Map() // req -> index (every copy sent)
    const sentAt = new Float64Array(n) // time of the last send while unanswered, else 0
    let outstanding = 0
    const orderT = [] // send times and indexes, in send order; head moves on
    const orderI = []
    let head = 0
    const tries = new Uint32Array(n)
    const queue = []
    let next = 0
    let replies = []
    let rhead = 0 // replies taken so far (no shift(): linear in the batch)
    let wake = null
    let woken = false
    // The reader hands replies over one at a time; waking this loop once
    // per turn of the event loop (not per reply) lets it take them in bulk.
    const batch = {
      owner,
      resolve: (r) => {
        replies.push(r)
        if (wake && !woken) {
          woken = true
          setImmediate(() => { woken = false; if (wake) wake() })
        }
      }
    }
    let clock = now()
    const send = (i) => {
      const req = this._send(list[i])
      owner.set(req, i)
      if (sentAt[i] === 0) outstanding++
      sentAt[i] = clock || 1e-9
      orderT.push(sentAt[i])
      orderI.push(i)
      tries[i]++
    }
    this._batches.add(batch)
    try {
      while (next < n || queue.length || outstanding) {
        clock = now()
        while (outstanding < window && (queue.length || next < n)) send(queue.length ? queue.pop() : next++)
        if (rhead === replies.length) {
          if (rhead) {
            replies = []
            rhead = 0
          }
          if (this._closed) throw new FleetqError('client closed', 'closed')
          while (head < orderT.length && sentAt[orderI[head]] !== orderT[head]) head++
          if (head > 65536) {
            orderT.splice(0, head)
            orderI.splice(0, head)
            head = 0
          }
          const left = head < orderT.length ? orderT[head] + this.timeout - clock : this.timeout
          if (left > 0) {
            let timer
            await new Promise((resolve) => { wake = resolve; timer = setTimeout(resolve, left) })
            clearTimeout(timer)
            wake = null
            if (rhead < replies.length) continue
          }
          clock = now()
          while (head < orderT.length && orderT[head] + this.timeout <= clock) {
            const ts = orderT[head]
            const i = orderI[head++]
            if (sentAt[i] !== ts) continue
            if (tries[i] > this.retries) {
              out[i] = new Timeout(`no reply from ${this.endpoint} after ${tries[i]} attempts`)
              sentAt[i] = 0
              outstanding--
            } else {
              send(i)
            }
          }
          continue
        }
        while (rhead < replies.length) {
          const reply = replies[rhead++]
          const i = owner.get(reply.req)
          owner.delete(reply.req)
          if (i === undefined || sentAt[i] === 0) continue // a late copy of one already answered
          sentAt[i] = 0
          outstanding--
          if (reply.unsent) { // never left: resending would wait as long again
            out[i] = new Timeout(reply.unsent)
            continue
          }
          if (reply.ok) {
            out[i] = reply
            continue
          }
          const err = errorFor(reply)
          if (err.retriable && tries[i] <= this.retries) {
            queue.push(i)
            await sleep(10)
          } else {
            out[i] = err
          }
        }
      }
    } finally {
      this._batches.delete(batch)
    }
    return out
  }

  // ---- status sockets ------------------------------------------------------

  async _subscriber (topics, opts = {}) {
    if (!this.publish) throw new RangeError(`no status endpoint known for ${this.endpoint}: pass publish`)
    const o = { linger: 0, ...(this._curve || {}) }
    if (opts.receiveHighWaterMark != null) o.receiveHighWaterMark = opts.receiveHighWaterMark
    if (opts.receiveBufferSize != null) o.receiveBufferSize = opts.receiveBufferSize
    const sub = new zmq.Subscriber(o)
    for (const t of topics) sub.subscribe(t)
    // Connected once the handshake is done (or after 2 s: ZeroMQ keeps
    // trying by itself); the subscription follows right after it.
    const shook = new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), opts.waitMs ?? 2000)
      sub.events.on('handshake', () => { clearTimeout(timer); resolve(true) })
    })
    sub.connect(this.publish)
    if (await shook) await sleep(50)
    return sub
  }

  // ---- operations -------------------------------------------------------------

  // Queue one command; resolves once fleetqd has it on disk with the reply
  // ({id, state, dup}).  With wait: true, also waits for the command to
  // end and adds the terminal status event as reply.event (a failure does
  // not reject).
  async submit (args) {
    const body = C.submitRequest(args)
    if (!args.wait) return this._call(body, { timeout: args.timeout })
    const deadline = now() + (args.timeout ?? C.waitBudgetMs(body.ttl_ms === undefined ? undefined : Number(body.ttl_ms), body.not_before))
    const device = body.vin !== undefined ? body.vin : String(body.site)
    const sub = await this._subscriber([`${body.tenant}/${device}`])
    try {
      const reply = await this._call(body, { timeout: Math.max(1, deadline - now()) })
      reply.event = await this._waitEvent(new Inbox(sub), reply, body, deadline)
      return reply
    } finally {
      sub.close()
    }
  }

  async _waitEvent (inbox, reply, body, deadline) {
    const id = reply.id
    let nextPoll = now() + 2000
    let doneAt = null
    let cmd = null
    for (;;) {
      const t = now()
      if (t >= deadline) throw new Timeout(`command ${id} did not end in time`)
      const msg = await inbox.next(Math.min(deadline, nextPoll, doneAt ?? nextPoll) - t)
      if (msg) {
        const ev = C.unpack(msg[msg.length - 1])
        if (ev.id === id && C.TERMINAL.has(ev.state)) return ev
        continue
      }
      if (doneAt !== null && now() >= doneAt) {
        // The stream missed it (a restart, a dropped event): read it back.
        const ev = await this._findEvent(id, body.tenant, cmd.shard)
        return ev || eventFromCommand(cmd)
      }
      if (now() >= nextPoll) {
        nextPoll = now() + 2000
        let got
        try {
          got = await this.get({ id })
        } catch (e) {
          if (e instanceof Timeout || e instanceof NotFound) continue
          throw e
        }
        if (C.TERMINAL.has(got.state) && doneAt === null) {
          cmd = got
          doneAt = now() + 300
        }
      }
    }
  }

  async _findEvent (id, tenant, shard) {
    if (typeof shard !== 'number') return null
    const core = new C.WatchCore(tenant, null, null)
    let hi = await C.searchLast(async (x) => core.probeResult(await this._call(core.probeRequest(shard, x)), x))
    while (hi > 0n) {
      const lo = hi > 1000n ? hi - 1000n : 0n
      const r = await this._call(C.historyRequest(shard, lo, Number(hi - lo), tenant))
      for (const ev of (r.events || []).slice().reverse()) {
        if (ev.id === id && C.TERMINAL.has(ev.state)) return ev
      }
      hi = lo
    }
    return null
  }

  // Submit many commands pipelined (at most `window` in flight); resolves
  // with the replies in order.  With raiseErrors (default) the first
  // refusal rejects once all were answered.
  async submitMany (commands, opts = {}) {
    const out = await this._callMany(Array.from(commands, (c) => C.submitRequest(c)), opts)
    if (opts.raiseErrors ?? true) {
      for (const r of out) if (r instanceof FleetqError) throw r
    }
    return out
  }

  async get (args) {
    return (await this._call(C.lookupRequest('get', args))).command
  }

  // Not resent after a timeout: a second cancel of a cancelled command
  // would say not_cancellable.
  async cancel (args) {
    return (await this._call(C.lookupRequest('cancel', args), { retry: false })).command
  }

  async history (args) {
    const a = args || {}
    return this._call(C.historyRequest(a.shard, a.after, a.limit, a.tenant))
  }

  async ping (opts = {}) {
    return this._call({ op: 'ping' }, { timeout: opts.timeout })
  }

  async health (opts = {}) {
    const t0 = process.hrtime.bigint()
    try {
      const r = await this._call({ op: 'ping' }, { timeout: opts.timeout ?? 2000, retry: false })
      return { ok: true, version: r.version, shards: r.shards, latencyMs: Number(process.hrtime.bigint() - t0) / 1e6 }
    } catch (e) {
      if (!(e instanceof FleetqError)) throw e
      return { ok: false, error: e.code, message: e.message }
    }
  }

  watch (opts = {}) {
    const w = new Watch(this, opts)
    this._watches.add(w)
    return w
  }

  // ---- campaigns --------------------------------------------------------------

  // One command to many devices (at most 100,000): each gets an ordinary
  // command with the key <key>/<vin or site>.  args: tenant, key, command,
  // devices ({vin | site, account}, VIN strings or site ids), params,
  // ttlMs, rate, maxFailureRatio, notBefore, account (the default),
  // timeout (per part), partBytes.  A list too large for one request goes
  // in parts (256 KiB) in order with the same key; a part that times out
  // or gets busy is sent again (safe: dup).  Resolves with the reply to
  // the last part (id, devices, state, dup: true when fleetqd had every
  // part already, parts).  A bad list throws before anything is sent; a
  // refusal rejects with its FleetqError (.part says which).
  async campaign (args) {
    const bodies = C.campaignRequests(args)
    const n = bodies.reduce((a, b) => a + b.devices.length, 0)
    let dup = true
    let reply = {}
    for (let i = 0; i < bodies.length; i++) {
      // The last part is answered once every device command is stored: 1 s
      // more per 1,000 devices.  Sending a part again is safe (dup).
      const end = now() + (args.timeout ?? this.timeout * (this.retries + 1) + (i === bodies.length - 1 ? n : 0))
      for (;;) {
        try {
          reply = await this._call(bodies[i], { timeout: Math.max(1, end - now()) })
          break
        } catch (e) {
          if (e instanceof FleetqError) e.part = i + 1
          if (!(e instanceof Timeout) || now() >= end) throw e
        }
      }
      dup = dup && reply.dup === true
    }
    reply.dup = dup
    if (reply.parts === undefined) reply.parts = bodies.length
    return reply
  }

  // A campaign by {id} or {tenant, key}: state, devices, counts per
  // command state, succeeded, failed, times, reason.
  async campaignGet (args) {
    const r = await this._call(C.lookupRequest('campaign_get', args))
    delete r.ok
    delete r.req
    return r
  }

  // Cancels the campaign's device commands still scheduled or queued;
  // resolves with {id, state, cancelled, reason}.  Sent again after busy
  // (the device commands still being stored), not after a timeout.
  async campaignAbort (args) {
    const body = C.lookupRequest('campaign_abort', args)
    const end = now() + this.timeout * (this.retries + 1)
    let r
    for (;;) {
      try {
        r = await this._call(body, { retry: false })
        break
      } catch (e) {
        // busy: the device commands are still being stored; nothing was
        // done, so asking again is safe.
        if (!(e instanceof FleetqError) || e.code !== 'busy' || now() >= end) throw e
        await sleep(250)
      }
    }
    delete r.ok
    delete r.req
    return r
  }

  // Follow a campaign's progress: an async iterator over its progress
  // events that ends after the final one (done or aborted); it reads the
  // campaign first (snapshot: true) and again after quietMs without an
  // event.  With args.onProgress, resolves once the campaign ended after
  // calling it for each event (with the final event).
  watchCampaign (args = {}) {
    const w = new CampaignWatch(this, args)
    this._watches.add(w)
    if (!args.onProgress) return w
    return (async () => {
      try {
        for await (const ev of w) await args.onProgress(ev)
        return w.final
      } finally {
        w.close()
      }
    })()
  }

  // ---- accounts (admin) -------------------------------------------------------

  async admin (action, fields = {}) {
    const m = { op: 'admin', action }
    for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) m[k] = C.text(k, v)
    return this._call(m, { retry: action !== 'account_remove' })
  }

  async accountAdd (a) {
    return (await this.admin('account_add', {
      account: a.account,
      access_token: a.accessToken,
      refresh_token: a.refreshToken,
      client_id: a.clientId,
      region: a.region,
      base_url: a.baseUrl
    })).account
  }

  async accountList () { return (await this.admin('account_list')).accounts }
  async accountGet (account) { return (await this.admin('account_get', { account })).account }
  async accountRemove (account) { await this.admin('account_remove', { account }) }
  async accountRetry (account) { return Boolean((await this.admin('account_retry', { account })).cleared) }
}

// An async iterator over status events: each event once, in order per
// shard, what the stream dropped (a slow consumer, a fleetqd restart)
// filled from history.  See index.d.ts (WatchOptions) for the rules.
class Watch {
  constructor (client, opts = {}) {
    this._c = client
    this.core = new C.WatchCore(opts.tenant, opts.device, opts.cursor)
    this._hadCursor = opts.cursor != null
    this.idleMs = opts.idleMs ?? 500
    this._opts = opts
    this._ready = []
    this._sub = null
    this._inbox = null
    this._closed = false
    this.shards = 0
    this._heard = 0
    this._starting = null
  }

  get filled () { return this.core.filled }

  // Positions of the events yielded so far ({shard: BigInt}, seq or, with a
  // tenant, tseq): pass it as `cursor` to resume right after the last one.
  get cursor () { return this.core.cursor(this._ready) }

  async _call (body) {
    // Waits out a fleetqd restart: timeouts are retried until it answers.
    for (;;) {
      if (this._closed) throw new FleetqError('watch closed', 'closed')
      try {
        return await this._c.call(body, { timeout: this._c.timeout })
      } catch (e) {
        if (!(e instanceof Timeout)) throw e
      }
    }
  }

  start () {
    if (!this._starting) {
      this._starting = (async () => {
        this.shards = Number((await this._call({ op: 'ping' })).shards)
        if (!this._hadCursor) {
          for (let sh = 0; sh < this.shards; sh++) {
            this.core.pos.set(sh, await C.searchLast(async (x) =>
              this.core.probeResult(await this._call(this.core.probeRequest(sh, x)), x)))
          }
        }
        this._sub = await this._c._subscriber([this.core.topic], this._opts)
        if (this._closed) this._sub.close() // closed while starting
        this._inbox = new Inbox(this._sub)
        this._heard = now()
        return this
      })()
    }
    return this._starting
  }

  async _fill (shard, after, upto) {
    for (;;) {
      const req = this.core.fillRequest(shard, after, upto)
      if (!req) return
      const [evs, next, done] = this.core.fillPage(await this._call(req), after, upto)
      after = next
      for (const ev of evs) if (this.core.advance(ev) && this.core.matches(ev)) this._ready.push(ev)
      if (done) return
    }
  }

  // The next event, or null when none came within timeoutMs (undefined:
  // wait as long as it takes).
  async next (timeoutMs) {
    await this.start()
    const end = timeoutMs == null ? null : now() + timeoutMs
    while (!this._ready.length) {
      if (this._closed) return null
      const t = now()
      if (end !== null && t >= end) return null
      // Quiet for idleMs (across calls): events lost at the end of a
      // burst leave no later event to reveal them, so look.
      const quiet = t - this._heard
      if (quiet >= this.idleMs) {
        for (let sh = 0; sh < this.shards; sh++) await this._fill(sh, this.core.pos.get(sh) ?? 0n, null)
        this._heard = now()
        continue
      }
      const left = end === null ? this.idleMs - quiet : Math.min(this.idleMs - quiet, end - t)
      let msg
      try {
        msg = await this._inbox.next(left)
      } catch (e) {
        if (this._closed) return null
        throw e
      }
      if (msg) {
        this._heard = now()
        let ev
        try {
          ev = C.unpack(msg[msg.length - 1])
        } catch (e) {
          continue
        }
        const [kind, after, upto] = this.core.live(ev)
        if (kind === 'dup') {
          this.core.skipped++
          continue
        }
        if (kind === 'gap') await this._fill(ev.shard, after, upto)
        if (this.core.advance(ev) && this.core.matches(ev)) this._ready.push(ev)
      }
    }
    return this._ready.shift()
  }

  [Symbol.asyncIterator] () {
    return {
      next: async () => {
        const ev = await this.next()
        return ev === null ? { done: true, value: undefined } : { done: false, value: ev }
      },
      return: async () => {
        this.close()
        return { done: true, value: undefined }
      }
    }
  }

  close () {
    this._closed = true
    this._c._watches.delete(this)
    if (this._sub && !this._sub.closed) this._sub.close()
  }
}

// An async iterator over one campaign's progress events (topic
// <tenant>/campaign/<id>), each yielded only when it brings news, ending
// after the final one; a campaign_get snapshot at the start and after
// every quiet spell, so a lost event is never missed.
class CampaignWatch {
  constructor (client, args = {}) {
    this._c = client
    this._lookup = { id: args.id, tenant: args.tenant, key: args.key }
    this.quietMs = args.quietMs ?? 5000
    this.id = null
    this.tenant = args.tenant ?? null
    this.final = null
    this._last = null
    this._sub = null
    this._inbox = null
    this._heard = -Infinity
    this._closed = false
  }

  async start () {
    if (!this._sub) {
      const first = await this._c.campaignGet(this._lookup)
      this.id = first.id
      this.tenant = first.tenant ?? this.tenant
      this._sub = await this._c._subscriber([`${this.tenant}/campaign/${this.id}`])
      this._inbox = new Inbox(this._sub)
      this._heard = -Infinity
    }
    return this
  }

  _news (ev) {
    const k = C.campaignProgressKey(ev)
    if (k === this._last && !C.campaignFinal(ev)) return false
    this._last = k
    return true
  }

  // The next progress event; null after timeoutMs without one, or once
  // the final event was returned (or the watch closed).
  async next (timeoutMs) {
    if (this.final || this._closed) return null
    await this.start()
    const end = timeoutMs === undefined ? null : now() + timeoutMs
    for (;;) {
      if (this._closed) return null
      const t = now()
      if (t - this._heard >= this.quietMs) {
        this._heard = t
        const ev = C.campaignSnapshot(await this._c._call(C.lookupRequest('campaign_get', { id: this.id, tenant: this.tenant })))
        if (this._news(ev)) {
          if (C.campaignFinal(ev)) this.final = ev
          return ev
        }
        continue
      }
      if (end !== null && t >= end) return null
      let left = this.quietMs - (t - this._heard)
      if (end !== null) left = Math.min(left, end - t)
      let msg
      try {
        msg = await this._inbox.next(left)
      } catch (e) {
        if (this._closed) return null
        throw e
      }
      if (!msg) continue
      let ev
      try {
        ev = C.unpack(msg[msg.length - 1])
      } catch (e) {
        continue
      }
      // The topic is a prefix: "c-1" also selects "c-12".
      if (!ev || ev.id !== this.id) continue
      this._heard = now()
      if (this._news(ev)) {
        if (C.campaignFinal(ev)) this.final = ev
        return ev
      }
    }
  }

  [Symbol.asyncIterator] () {
    return {
      next: async () => {
        const ev = await this.next()
        return ev === null ? { done: true, value: undefined } : { done: false, value: ev }
      },
      return: async () => {
        this.close()
        return { done: true, value: undefined }
      }
    }
  }

  close () {
    this._closed = true
    this._c._watches.delete(this)
    if (this._sub && !this._sub.closed) this._sub.close()
  }
}

function deferred () {
  let resolve
  const promise = new Promise((resolve_) => { resolve = resolve_ })
  return { promise, resolve }
}

async function withTimeout (promise, ms) {
  let timer
  const t = new Promise((resolve) => { timer = setTimeout(() => resolve(null), ms) })
  try {
    return await Promise.race([promise, t])
  } finally {
    clearTimeout(timer)
  }
}

function eventFromCommand (cmd) {
  // An event-shaped object from `get`, for the rare wait whose terminal
  // event could not be read back.
  const ev = {}
  for (const k of ['id', 'tenant', 'key', 'command', 'state', 'reason', 'error', 'http', 'fault', 'shard']) ev[k] = cmd[k] ?? null
  if (cmd.vin !== undefined) ev.vin = cmd.vin
  else ev.site = cmd.site
  const tr = cmd.transitions || []
  ev.prev = tr.length >= 2 ? tr[tr.length - 2].state : null
  ev.at = cmd.updated
  ev.attempt = cmd.attempts
  return ev
}

module.exports = { Client, Watch, CampaignWatch }
