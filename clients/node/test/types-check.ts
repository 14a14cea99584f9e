// Compiled (not run) by types.test.js: index.d.ts must describe these uses.
declare const console: { log (...a: unknown[]): void }
import { Client, BadParam, NotCancellable, Event, FleetqError, TERMINAL } from '..'

async function main (): Promise<void> {
  const c = new Client({ endpoint: 'tcp://127.0.0.1:5555', timeout: 5000 })
  const r = await c.submit({ tenant: 'acme', key: 1, account: 'a', vin: 'X', command: 'door_lock', wait: true })
  const ev: Event = r.event
  const s: bigint = ev.seq
  const site: bigint | undefined = ev.site
  const r2 = await c.submit({ tenant: 'acme', key: 'k', account: 'a', site: 2n ** 60n, command: 'backup', params: { backup_reserve_percent: 30, x: undefined } })
  const id: string = r2.id
  const r3 = await c.submit({ tenant: 'acme', key: 's', account: 'a', vin: 'X', command: 'door_lock', notBefore: new Date() })
  const sched: boolean = r3.state === 'scheduled'
  const nb: number | null = (await c.get(r3.id)).not_before
  const cmd = await c.get({ tenant: 'acme', key: 'k' })
  const st: string = cmd.state
  const h = await c.history({ shard: 0, after: 0n, tenant: 'acme' })
  const next: bigint = h.next
  const many = await c.submitMany([{ tenant: 't', key: 'k', account: 'a', vin: 'V', command: 'door_lock' }], { window: 10 })
  for (const x of many) if (x instanceof FleetqError) console.log(x.code)
  const w = c.watch({ tenant: 'acme', idleMs: 300 })
  for await (const e of w) { console.log(e.state, TERMINAL.has(e.state as any)); break }
  const cur = w.cursor
  const e1 = await w.next(1000)
  try { await c.cancel('id') } catch (e) { if (e instanceof NotCancellable) console.log(e.state) }
  const hh = await c.health()
  if (hh.ok) console.log(hh.latencyMs); else console.log(hh.error)
  const acc = await c.accountAdd({ account: 'a', accessToken: 't', refreshToken: 'r', clientId: 'c', region: 'na' })
  const cr = await c.campaign({ tenant: 'acme', key: 'k', command: 'flash_lights', devices: ['V', { site: 5n, account: 'b' }], account: 'a', rate: 100, maxFailureRatio: 0.2 })
  const cid: string = cr.id
  const cg = await c.campaignGet({ id: cid })
  const failed: number = cg.failed
  for await (const pe of c.watchCampaign({ id: cid })) console.log(pe.state, pe.final)
  const fin = await c.watchCampaign({ tenant: 'acme', key: 'k', onProgress: (pe) => console.log(pe.counts) })
  const ab = await c.campaignAbort({ id: cid })
  console.log(failed, fin.state, ab.cancelled)
  console.log(s, site, id, st, next, cur, e1, acc.id, BadParam)
  c.close()
}
main()
