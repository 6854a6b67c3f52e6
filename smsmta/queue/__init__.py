"""The queue layer: the only code that writes the message tables (issue 15).

`inbox`: the SMS process's inbox (mid.inbox), fed by every receiver bind (the SMS
process's and the MTA's transceivers). The rest of the queue (enqueue, claims, outcomes,
receipts, purge) joins it here as it moves out of the services.
"""
