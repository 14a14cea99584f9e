'use strict'
// One error class per fleetq error code.  Every refusal
// ({ok: false, error: CODE, message}) rejects with a FleetqError whose
// `code` is that code; codes this version does not know still give a
// FleetqError carrying them.

class FleetqError extends Error {
  constructor (message, code, reply) {
    super(message)
    this.name = this.constructor.name
    this.code = code || this.constructor.code || 'error'
    this.reply = reply || null
  }

  // True for codes where sending the same request again may succeed.
  get retriable () { return Boolean(this.constructor.retriable) }
}

function kind (name, code, extra = {}) {
  const C = { [name]: class extends FleetqError {} }[name]
  C.code = code
  Object.assign(C, extra)
  return C
}

const BadRequest = kind('BadRequest', 'bad_request')
const UnsupportedVersion = kind('UnsupportedVersion', 'unsupported_version')
const UnknownCommand = kind('UnknownCommand', 'unknown_command')
const BadParam = kind('BadParam', 'bad_param')
const IdempotencyMismatch = kind('IdempotencyMismatch', 'idempotency_mismatch')
const NotFound = kind('NotFound', 'not_found')
const NotCancellable = kind('NotCancellable', 'not_cancellable')
Object.defineProperty(NotCancellable.prototype, 'state', { get () { return this.reply ? this.reply.state : undefined } })
const Forbidden = kind('Forbidden', 'forbidden')
const Busy = kind('Busy', 'busy', { retriable: true })
const StorageFull = kind('StorageFull', 'storage_full')
const TooLarge = kind('TooLarge', 'too_large')
const InternalError = kind('InternalError', 'internal', { retriable: true })
const UnknownAccount = kind('UnknownAccount', 'unknown_account')
const BudgetExceeded = kind('BudgetExceeded', 'budget_exceeded')
Object.defineProperty(BudgetExceeded.prototype, 'resetAt', { get () { return this.reply ? this.reply.reset_at : undefined } })
const Timeout = kind('Timeout', 'timeout', { retriable: true })

const BY_CODE = new Map([BadRequest, UnsupportedVersion, UnknownCommand, BadParam, IdempotencyMismatch,
  NotFound, NotCancellable, Forbidden, Busy, StorageFull, TooLarge, InternalError, UnknownAccount,
  BudgetExceeded]
  .map((C) => [C.code, C]))

function errorFor (reply) {
  const code = String(reply.error || 'internal')
  const C = BY_CODE.get(code) || FleetqError
  return new C(String(reply.message || code), code, reply)
}

module.exports = {
  FleetqError,
  BadRequest,
  UnsupportedVersion,
  UnknownCommand,
  BadParam,
  IdempotencyMismatch,
  NotFound,
  NotCancellable,
  Forbidden,
  Busy,
  StorageFull,
  TooLarge,
  InternalError,
  UnknownAccount,
  BudgetExceeded,
  Timeout,
  errorFor
}
