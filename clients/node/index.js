'use strict'
// fleetq-client: the Node client of fleetq, the durable command dispatcher
// for Tesla vehicles and energy sites.  See index.d.ts for the API and
// docs/clients.md in the fleetq repository for a comparison of clients.
//
//   const { Client } = require('fleetq-client')
//   const c = new Client('tcp://127.0.0.1:5555')
//   const r = await c.submit({ tenant: 'acme', key: 'order-1', account: 'fleet-ops',
//     vin: '5YJ3E1EA7KF000001', command: 'set_charge_limit', params: { percent: 80 }, wait: true })
//   console.log(r.id, r.event.state, r.event.reason)

const { Client, Watch, CampaignWatch } = require('./lib/client')
const errors = require('./lib/errors')
const { TERMINAL } = require('./lib/common')

module.exports = { Client, Watch, CampaignWatch, TERMINAL, ...errors }
