'use strict'
// index.d.ts type-checks the way the package is used (test/types-check.ts,
// compiled under --strict, not run), and gets wrong uses refused.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawnSync } = require('child_process')

const TSC = path.join(__dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc')
const FLAGS = ['--noEmit', '--strict', '--target', 'es2020', '--module', 'commonjs', '--moduleResolution', 'node', '--lib', 'es2020']

function tsc (file) {
  return spawnSync(process.execPath, [TSC, ...FLAGS, file], { encoding: 'utf8', timeout: 120000 })
}

test('index.d.ts describes the API as used', () => {
  const r = tsc(path.join(__dirname, 'types-check.ts'))
  assert.equal(r.status, 0, r.stdout + r.stderr)
})

test('index.d.ts refuses wrong uses', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fq-ts-'))
  const f = path.join(dir, 'bad.ts')
  fs.writeFileSync(f, `import { Client } from '${path.join(__dirname, '..').replace(/\\/g, '/')}'
async function main (): Promise<void> {
  const c = new Client({ endpoint: 'tcp://127.0.0.1:5555' })
  const r = await c.submit({ tenant: 'a', key: 'k', account: 'a', vin: 'V', command: 'door_lock' })
  const n: number = (await c.history({ shard: 0 })).next
  await c.submit({ tenant: 'a', key: 'k', vin: 'V', command: 'door_lock' })
  console.log(r, n)
}
declare const console: { log (...a: unknown[]): void }
main()
`)
  const r = tsc(f)
  fs.rmSync(dir, { recursive: true })
  assert.notEqual(r.status, 0)
  assert.match(r.stdout, /Type 'bigint' is not assignable to type 'number'/)
  assert.match(r.stdout, /Property 'account' is missing/)
})
