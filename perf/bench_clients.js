'use strict'
// The Node half of perf/bench_clients.py: N submits on one connection,
// pipelined (up to WINDOW in flight) or one at a time; prints
// {"rate": acked submits per second} on its last line.
//   node perf/bench_clients.js ENDPOINT TAG N WINDOW pipelined|serial

const path = require('path')
const { Client } = require(path.join(__dirname, '..', 'clients', 'node'))

const [endpoint, tag, nArg, windowArg, mode] = process.argv.slice(2)
const n = Number(nArg)
const cars = []
const VIN = 'ABCDEFGHJKLMNPRSTUVWXYZ0123456789'
for (let i = 0; i < 1000; i++) {
  let s = ''
  for (let x = i, k = 0; k < 9; k++, x = Math.floor(x / VIN.length)) s = VIN[x % VIN.length] + s
  cars.push('5YJ3E7EB' + s)
}

async function main () {
  const c = new Client({ endpoint, timeout: 30000 })
  await c.ping()
  const cmds = Array.from({ length: n }, (_, i) => ({
    tenant: 'bench', key: `${tag}-${i}`, account: 'bench', command: 'set_charge_limit',
    vin: cars[i % cars.length], params: { percent: 50 + (i % 51) }
  }))
  const t0 = process.hrtime.bigint()
  const c0 = process.cpuUsage()
  let out
  if (mode === 'serial') {
    out = []
    for (const m of cmds) out.push(await c.submit(m))
  } else {
    out = await c.submitMany(cmds, { window: Number(windowArg) })
  }
  const dt = Number(process.hrtime.bigint() - t0) / 1e9
  const cu = process.cpuUsage(c0)
  c.close()
  const bad = out.filter((r) => !r.ok || r.dup)
  if (out.length !== n || bad.length) throw new Error(`${bad.length} of ${n} not acknowledged as new`)
  console.log(JSON.stringify({ rate: n / dt, seconds: dt, cpu_us: (cu.user + cu.system) / n }))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
