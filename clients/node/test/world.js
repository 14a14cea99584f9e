'use strict'
// Starts test/world.py (a real fleetsim + fleetqd + account from the
// repository's integration harness) and talks to it over its stdin/stdout.

const path = require('path')
const readline = require('readline')
const { spawn } = require('child_process')

const PY = process.env.FQ_PYTHON || '/usr/bin/python3'

async function startWorld (args = []) {
  const p = spawn(PY, [path.join(__dirname, 'world.py'), ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' }
  })
  const rl = readline.createInterface({ input: p.stdout })
  const lines = []
  const waiters = []
  rl.on('line', (line) => {
    if (!line.startsWith('{')) return // the harness' own log lines
    const v = JSON.parse(line)
    const w = waiters.shift()
    if (w) w(v)
    else lines.push(v)
  })
  const exited = new Promise((resolve) => p.on('exit', resolve))
  const next = () => lines.length
    ? Promise.resolve(lines.shift())
    : Promise.race([new Promise((resolve) => waiters.push(resolve)),
      exited.then((code) => { throw new Error(`world.py exited with ${code}`) })])
  const info = await next()
  return {
    ...info,
    async restart () {
      p.stdin.write('restart\n')
      const r = await next()
      info.pid = r.pid
      this.pid = r.pid
      return r
    },
    // (--curve) List the "stranger" key for tenant acme and reload (SIGHUP).
    async allow () {
      p.stdin.write('allow\n')
      return next()
    },
    async stop () {
      p.stdin.end('stop\n')
      await exited
    }
  }
}

// Clients a test made, closed by closeAll() in its after() hook even when
// an assertion failed half-way (an open socket keeps the process alive).
const made = []
function track (c) {
  made.push(c)
  return c
}
function closeAll () {
  for (const c of made.splice(0)) c.close()
}

let n = 0
function unique (prefix) {
  n++
  return `${prefix}-${process.pid}-${n}`
}

module.exports = { startWorld, unique, track, closeAll }
