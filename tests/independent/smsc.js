'use strict';
/*
 * An SMSC written with code we did not write: the SMPP server of the npm package `smpp`
 * (pinned in package.json / package-lock.json), for smsmta's promise tests
 * (tests/independent/) and bench/independent_smsc.py. Our own simulator shares our reading
 * of SMPP 3.4; this one parses and builds every PDU with someone else's codec.
 *
 * What it does:
 * - accepts bind_transmitter / bind_receiver / bind_transceiver; with `max_binds` > 0 it
 *   refuses a bind beyond that many concurrent binds of one system_id with `bind_refusal`
 *   (ESME_RBINDFAIL by default, or ESME_RALYBND), and counts the most concurrent binds seen;
 * - answers submit_sm after `resp_delay_ms` with a message id written in `resp_id_format`
 *   (decimal | hex), ids counting up from `id_start`;
 * - throttles: ESME_RTHROTTLED when more than `throttle_window` submit_sm are unanswered on
 *   a session, or more than `throttle_rate` were accepted in the last second for a login;
 * - decides each message's outcome from its destination (a seeded hash: the same
 *   destination always gets the same outcome, so a resubmitted duplicate does too):
 *   `fail_fraction` of destinations fail with a stat of `fail_stats` and an err code of
 *   their own, the rest are DELIVRD;
 * - sends a delivery receipt (deliver_sm, esm_class 0x04) `dlr_delay_ms` after the answer,
 *   only when registered_delivery asks for one, with the id in the text in
 *   `text_id_format` (decimal | hex | none: no `id:` at all) and, when `receipt_tlvs`, the
 *   receipted_message_id (the id as answered) and message_state TLVs; receipts and MOs wait
 *   for a receiver (or transceiver) bind of the login, and a receipt whose deliver_sm_resp
 *   never came (the link dropped) or was not 0 is sent again;
 * - injects an MO (deliver_sm esm_class 0) on command;
 * - drops every link on command;
 * - records every bind, close, submit_sm (all fields, short_message and TLVs in hex, the
 *   status and id it answered), receipt and MO as JSON lines in the record file.
 *
 * Control: a line-based JSON channel on 127.0.0.1 (--control-port, 0 = any free port):
 * one JSON object a line ({"cmd": "config" | "stats" | "drop" | "mo", ...}), one JSON
 * answer a line. On start it prints {"smpp_port": P, "control_port": C} on stdout.
 * SIGTERM: closes the listeners and every link, exits 0.
 *
 * Usage: node smsc.js --record FILE [--port 0] [--control-port 0] [--config JSON]
 * Touches: sockets on 127.0.0.1 and the record file, nothing else.
 */

const fs = require('fs');
const net = require('net');
const smpp = require('smpp');

// ------------------------------------------------------------------------------------------
// Command line and options
// ------------------------------------------------------------------------------------------

function argument(name, fallback) {
	const index = process.argv.indexOf(name);
	return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

const options = {
	max_binds: 0,
	bind_refusal: 'ESME_RBINDFAIL',
	password: null,
	resp_id_format: 'decimal',
	text_id_format: 'decimal',
	receipt_tlvs: true,
	id_start: 1,
	resp_delay_ms: 5,
	dlr_delay_ms: 50,
	fail_fraction: 0,
	fail_stats: ['UNDELIV', 'REJECTD'],
	throttle_window: 0,
	throttle_rate: 0,
	seed: 1,
	deliver_window: 50,
	redeliver_ms: 1000,
};
Object.assign(options, JSON.parse(argument('--config', '{}')));
const recordPath = argument('--record', null);
if (!recordPath) {
	process.stderr.write('usage: node smsc.js --record FILE [--port P] [--control-port C]\n');
	process.exit(2);
}
const recordFd = fs.openSync(recordPath, 'a');

function record(event) {
	event.t = Date.now() / 1000;
	fs.writeSync(recordFd, JSON.stringify(event) + '\n');
}

// ------------------------------------------------------------------------------------------
// Raw PDU bytes: short_message and TLVs exactly as received (the library decodes them)
// ------------------------------------------------------------------------------------------

const fromBuffer = smpp.PDU.prototype.fromBuffer;
smpp.PDU.prototype.fromBuffer = function (buffer) {
	Object.defineProperty(this, 'raw', { value: Buffer.from(buffer), enumerable: false });
	return fromBuffer.call(this, buffer);
};

function cstringEnd(buffer, offset) {
	const end = buffer.indexOf(0, offset);
	return end < 0 ? buffer.length : end + 1;
}

// submit_sm body: service_type, ton, npi, source, ton, npi, dest, esm_class, protocol_id,
// priority_flag, schedule_delivery_time, validity_period, registered_delivery,
// replace_if_present_flag, data_coding, sm_default_msg_id, sm_length, short_message, TLVs
function rawSubmit(buffer) {
	let offset = 16;
	offset = cstringEnd(buffer, offset) + 2;
	offset = cstringEnd(buffer, offset) + 2;
	offset = cstringEnd(buffer, offset) + 3;
	offset = cstringEnd(buffer, offset);
	offset = cstringEnd(buffer, offset) + 4;
	const length = buffer[offset];
	offset += 1;
	const shortMessage = buffer.slice(offset, offset + length);
	offset += length;
	const tlvs = {};
	const total = buffer.readUInt32BE(0);
	while (offset + 4 <= total) {
		const tag = buffer.readUInt16BE(offset);
		const size = buffer.readUInt16BE(offset + 2);
		const key = '0x' + tag.toString(16).toUpperCase().padStart(4, '0');
		tlvs[key] = buffer.slice(offset + 4, offset + 4 + size).toString('hex');
		offset += 4 + size;
	}
	return { short_message_hex: shortMessage.toString('hex'), tlvs: tlvs };
}

// ------------------------------------------------------------------------------------------
// Outcomes: a seeded hash of the destination
// ------------------------------------------------------------------------------------------

function fnv1a(text) {
	let hash = 0x811c9dc5;
	for (let i = 0; i < text.length; i++) {
		hash ^= text.charCodeAt(i);
		hash = Math.imul(hash, 0x01000193) >>> 0;
	}
	return hash >>> 0;
}

function outcomeOf(destination) {
	const hash = fnv1a(options.seed + ':' + destination);
	if ((hash % 1000000) / 1000000 < options.fail_fraction) {
		const stats = options.fail_stats;
		const second = fnv1a(destination + ':' + options.seed);
		return { stat: stats[second % stats.length], err: String(100 + (second % 900)) };
	}
	return { stat: 'DELIVRD', err: '000' };
}

const MESSAGE_STATE = {
	DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8,
};

function formatId(number, format) {
	return format === 'hex' ? number.toString(16).toUpperCase() : String(number);
}

function smppDate(date) {
	const two = (n) => String(n).padStart(2, '0');
	return two(date.getUTCFullYear() % 100) + two(date.getUTCMonth() + 1) +
		two(date.getUTCDate()) + two(date.getUTCHours()) + two(date.getUTCMinutes());
}

// ------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------

let nextId = options.id_start;
let nextSession = 1;
const sessions = new Set();
const binds = {}; // system_id -> {current, max, accepted, refused}
const rateWindow = {}; // system_id -> timestamps of accepted submits in the last second
const pending = []; // receipts and MOs waiting for a receiver: {kind, system_id, pdu, ...}
const counters = {
	submits: 0, accepted: 0, throttled: 0, receipts_sent: 0, receipts_acked: 0,
	mo_sent: 0, mo_acked: 0, drops: 0,
};

function bindsOf(systemId) {
	if (!binds[systemId]) {
		binds[systemId] = { current: 0, max: 0, accepted: 0, refused: 0 };
	}
	return binds[systemId];
}

const BIND_COMMANDS = {
	bind_transmitter: { tx: true, rx: false },
	bind_receiver: { tx: false, rx: true },
	bind_transceiver: { tx: true, rx: true },
};

// ------------------------------------------------------------------------------------------
// Sessions
// ------------------------------------------------------------------------------------------

function onSession(session) {
	session.id = nextSession++;
	session.bound = null; // {system_id, tx, rx, command}
	session.unanswered = 0;
	session.inFlight = new Map(); // sequence_number -> pending item (deliver_sm not answered)
	sessions.add(session);

	session.on('error', () => {});
	session.on('close', () => {
		sessions.delete(session);
		if (session.bound) {
			const entry = bindsOf(session.bound.system_id);
			entry.current -= 1;
			record({
				ev: 'close', session: session.id, system_id: session.bound.system_id,
				concurrent: entry.current,
			});
			session.bound = null;
		}
		for (const item of session.inFlight.values()) {
			pending.push(item); // never answered: send it again on another link
		}
		session.inFlight.clear();
	});

	for (const command of Object.keys(BIND_COMMANDS)) {
		session.on(command, (pdu) => onBind(session, pdu, command));
	}
	session.on('submit_sm', (pdu) => onSubmit(session, pdu));
	session.on('deliver_sm_resp', (pdu) => onDeliverResp(session, pdu));
	session.on('enquire_link', (pdu) => session.send(pdu.response()));
	session.on('unbind', (pdu) => {
		session.send(pdu.response(), () => session.close());
	});
	session.on('unknown', (pdu) => session.send(pdu.response()));
	session.on('pdu', (pdu) => {
		const handled = ['submit_sm', 'deliver_sm_resp', 'enquire_link', 'unbind', 'unknown',
			'unbind_resp', 'enquire_link_resp', 'generic_nack', ...Object.keys(BIND_COMMANDS)];
		if (!handled.includes(pdu.command) && !pdu.isResponse()) {
			session.send(pdu.response({ command_status: smpp.ESME_RINVCMDID }));
		}
	});
}

function onBind(session, pdu, command) {
	const systemId = pdu.system_id;
	const entry = bindsOf(systemId);
	let status = 0;
	if (session.bound) {
		status = smpp.ESME_RALYBND;
	} else if (options.password !== null && pdu.password !== options.password) {
		status = smpp.ESME_RINVPASWD;
	} else if (options.max_binds > 0 && entry.current >= options.max_binds) {
		status = smpp[options.bind_refusal];
		entry.refused += 1;
	}
	if (status === 0) {
		entry.current += 1;
		entry.accepted += 1;
		entry.max = Math.max(entry.max, entry.current);
		session.bound = Object.assign({ system_id: systemId, command: command },
			BIND_COMMANDS[command]);
	}
	record({
		ev: 'bind', session: session.id, command: command, system_id: systemId,
		system_type: pdu.system_type, addr_ton: pdu.addr_ton, addr_npi: pdu.addr_npi,
		status: status, concurrent: entry.current,
	});
	session.send(pdu.response({ command_status: status, system_id: 'independent' }));
	if (status === 0) {
		flushPending();
	}
}

function onSubmit(session, pdu) {
	counters.submits += 1;
	const raw = rawSubmit(pdu.raw);
	const fields = {
		ev: 'submit', session: session.id, sequence: pdu.sequence_number,
		system_id: session.bound ? session.bound.system_id : null,
		service_type: pdu.service_type,
		source_addr: pdu.source_addr, source_addr_ton: pdu.source_addr_ton,
		source_addr_npi: pdu.source_addr_npi,
		destination_addr: pdu.destination_addr, dest_addr_ton: pdu.dest_addr_ton,
		dest_addr_npi: pdu.dest_addr_npi, esm_class: pdu.esm_class,
		protocol_id: pdu.protocol_id, priority_flag: pdu.priority_flag,
		registered_delivery: pdu.registered_delivery, data_coding: pdu.data_coding,
		short_message_hex: raw.short_message_hex, tlvs: raw.tlvs,
	};
	if (!session.bound || !session.bound.tx) {
		fields.status = smpp.ESME_RINVBNDSTS;
		record(fields);
		session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
		return;
	}
	const systemId = session.bound.system_id;
	const now = Date.now();
	const recent = (rateWindow[systemId] = (rateWindow[systemId] || []).filter(
		(stamp) => now - stamp < 1000));
	const overWindow = options.throttle_window > 0 &&
		session.unanswered >= options.throttle_window;
	const overRate = options.throttle_rate > 0 && recent.length >= options.throttle_rate;
	if (overWindow || overRate) {
		counters.throttled += 1;
		fields.status = smpp.ESME_RTHROTTLED;
		fields.throttled_by = overWindow ? 'window' : 'rate';
		fields.unanswered = session.unanswered;
		record(fields);
		session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
		return;
	}
	recent.push(now);
	counters.accepted += 1;
	const number = nextId++;
	const messageId = formatId(number, options.resp_id_format);
	const outcome = outcomeOf(pdu.destination_addr);
	Object.assign(fields, { status: 0, message_id: messageId, number: number,
		outcome: outcome.stat, err: outcome.err });
	session.unanswered += 1;
	setTimeout(() => {
		session.unanswered -= 1;
		fields.answered = session.send(pdu.response({ message_id: messageId }));
		record(fields);
		if (pdu.registered_delivery & 0x03) {
			const wanted = (pdu.registered_delivery & 0x03) === 1 || outcome.stat !== 'DELIVRD';
			if (wanted) {
				setTimeout(() => queueReceipt(systemId, pdu, number, messageId, outcome),
					options.dlr_delay_ms);
			}
		}
	}, options.resp_delay_ms);
}

function messageText(pdu) {
	const message = pdu.short_message;
	let text = '';
	if (message && typeof message.message === 'string') {
		text = message.message;
	}
	return text.replace(/[^A-Za-z0-9 .,!?-]/g, '?').slice(0, 20);
}

function queueReceipt(systemId, submit, number, messageId, outcome) {
	const now = new Date();
	let text = '';
	if (options.text_id_format !== 'none') {
		text += 'id:' + formatId(number, options.text_id_format) + ' ';
	}
	const delivered = outcome.stat === 'DELIVRD' ? '001' : '000';
	text += 'sub:001 dlvrd:' + delivered + ' submit date:' + smppDate(now) + ' done date:' +
		smppDate(now) + ' stat:' + outcome.stat + ' err:' + outcome.err + ' text:' +
		messageText(submit);
	const fields = {
		source_addr_ton: submit.dest_addr_ton, source_addr_npi: submit.dest_addr_npi,
		source_addr: submit.destination_addr, dest_addr_ton: submit.source_addr_ton,
		dest_addr_npi: submit.source_addr_npi, destination_addr: submit.source_addr,
		esm_class: 0x04, data_coding: 0, short_message: Buffer.from(text, 'latin1'),
	};
	if (options.receipt_tlvs) {
		fields.receipted_message_id = messageId;
		fields.message_state = MESSAGE_STATE[outcome.stat] || 7;
	}
	pending.push({
		kind: 'receipt', system_id: systemId, fields: fields, message_id: messageId,
		destination: submit.destination_addr, stat: outcome.stat, err: outcome.err, tries: 0,
	});
	flushPending();
}

function receiversOf(systemId) {
	return [...sessions].filter((s) => s.bound && s.bound.rx && s.bound.system_id === systemId &&
		s.inFlight.size < options.deliver_window && s.socket.writable);
}

let roundRobin = 0;
function flushPending() {
	let kept = [];
	while (pending.length) {
		const item = pending.shift();
		if (item.notBefore && item.notBefore > Date.now()) {
			kept.push(item);
			continue;
		}
		const receivers = receiversOf(item.system_id);
		if (!receivers.length) {
			kept.push(item);
			continue;
		}
		const session = receivers[roundRobin++ % receivers.length];
		const pdu = new smpp.PDU('deliver_sm', Object.assign({}, item.fields));
		item.tries += 1;
		if (session.send(pdu)) {
			session.inFlight.set(pdu.sequence_number, item);
			counters[item.kind === 'receipt' ? 'receipts_sent' : 'mo_sent'] += 1;
		} else {
			kept.push(item);
		}
	}
	pending.push(...kept);
	kept = null;
}

function onDeliverResp(session, pdu) {
	const item = session.inFlight.get(pdu.sequence_number);
	if (!item) {
		return;
	}
	session.inFlight.delete(pdu.sequence_number);
	const event = {
		ev: item.kind, session: session.id, system_id: item.system_id,
		resp_status: pdu.command_status, tries: item.tries,
	};
	if (item.kind === 'receipt') {
		Object.assign(event, { message_id: item.message_id, destination: item.destination,
			stat: item.stat, err: item.err });
	} else {
		Object.assign(event, { source_addr: item.fields.source_addr,
			destination_addr: item.fields.destination_addr, text: item.text });
	}
	record(event);
	if (pdu.command_status === 0) {
		counters[item.kind === 'receipt' ? 'receipts_acked' : 'mo_acked'] += 1;
	} else {
		item.notBefore = Date.now() + options.redeliver_ms;
		pending.push(item);
	}
	flushPending();
}

const ticker = setInterval(flushPending, 50);

// ------------------------------------------------------------------------------------------
// Control channel
// ------------------------------------------------------------------------------------------

function control(request) {
	switch (request.cmd) {
	case 'config':
		for (const key of Object.keys(request)) {
			if (key !== 'cmd') {
				options[key] = request[key];
			}
		}
		return { ok: true, options: options };
	case 'stats':
		return { ok: true, binds: binds, counters: counters, pending: pending.length,
			sessions: sessions.size, next_id: nextId };
	case 'drop': {
		const dropped = sessions.size;
		counters.drops += 1;
		record({ ev: 'drop', sessions: dropped });
		for (const session of [...sessions]) {
			session.destroy();
		}
		return { ok: true, dropped: dropped };
	}
	case 'mo': {
		const text = request.text || '';
		const fields = {
			source_addr_ton: request.source_addr_ton === undefined ? 1 : request.source_addr_ton,
			source_addr_npi: request.source_addr_npi === undefined ? 1 : request.source_addr_npi,
			source_addr: request.source_addr, dest_addr_ton: request.dest_addr_ton || 0,
			dest_addr_npi: request.dest_addr_npi || 0, destination_addr: request.destination_addr,
			esm_class: 0, data_coding: 0, short_message: Buffer.from(text, 'latin1'),
		};
		pending.push({ kind: 'mo', system_id: request.system_id, fields: fields, text: text,
			tries: 0 });
		flushPending();
		return { ok: true };
	}
	default:
		return { ok: false, error: 'unknown command ' + request.cmd };
	}
}

const controlServer = net.createServer((socket) => {
	let buffer = '';
	socket.on('error', () => {});
	socket.on('data', (chunk) => {
		buffer += chunk.toString('utf8');
		let newline;
		while ((newline = buffer.indexOf('\n')) >= 0) {
			const line = buffer.slice(0, newline);
			buffer = buffer.slice(newline + 1);
			let answer;
			try {
				answer = control(JSON.parse(line));
			} catch (error) {
				answer = { ok: false, error: String(error) };
			}
			socket.write(JSON.stringify(answer) + '\n');
		}
	});
});

// ------------------------------------------------------------------------------------------
// Start and stop
// ------------------------------------------------------------------------------------------

const server = smpp.createServer(onSession);
server.listen(Number(argument('--port', '0')), '127.0.0.1', () => {
	controlServer.listen(Number(argument('--control-port', '0')), '127.0.0.1', () => {
		record({ ev: 'start', options: options });
		process.stdout.write(JSON.stringify({
			smpp_port: server.address().port, control_port: controlServer.address().port,
		}) + '\n');
	});
});

function stop() {
	clearInterval(ticker);
	record({ ev: 'stop', counters: counters });
	for (const session of [...sessions]) {
		session.destroy();
	}
	server.close();
	controlServer.close();
	fs.closeSync(recordFd);
	process.exit(0);
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
