"""The queue layer: the only code that writes the message tables (issue 15).

- `states`: the message states and their allowed transitions, one table, each row naming
  the module that performs it (tests/smsmta/test_states.py checks every UPDATE of
  `mid.broad_log` in the product against it).
- `enqueue`: deliveries and their messages into the queue (-> pending), and the cancel of
  a delivery's messages not claimed yet (pending -> cancelled).
- `claims`: an MTA child's claims (pending -> sending) and the reclaim of dead children's
  claims (sending -> pending).
- `outcomes`: an MTA child's submit outcomes (sending -> sent / failed / pending), the
  provider ids and the delivery KPIs they add to, run by mta.writer in its transaction.
- `message_log`: the message log (`mid.broad_log_msg`), failure texts and qualifications
  (and the operators' requalification).
- `receipts`: the reconciliation's writes (sent -> delivered / failed / pending), the
  receipt history (`mid.receipt`) and the handled inbox rows, run by sms_process.receipts
  in its transaction.
- `kpis`: which final state feeds which delivery counter, the receipt increments and the
  recount.
- `expiry`: the end of the wait for receipts (sent -> no_receipt).
- `purge`: final messages and what hangs off them, deleted in bounded batches (final ->
  deleted).
- `deliveries`: the delivery states (`mid.delivery.state`) and their allowed moves, one
  table.
- `inbox`: the SMS process's inbox (mid.inbox), fed by every receiver bind (the SMS
  process's and the MTA's transceivers), and the MO handler's hold and delete.

Only this package writes `mid.broad_log`, `mid.broad_log_msg`, `mid.provider_msg_id`,
`mid.inbox`, `mid.receipt` and `mid.delivery` (tests/test_architecture.py); the services
decide (with smsmta.policy) and call it inside their own transactions.
"""
