// The submit form, built from GET /commands so a new command needs no page change.
// The server is the single judge of validity (the form is `novalidate`): its
// 422 answer names a field such as `params.positions`, shown next to that input.

import { api, ApiError } from './api.js';
import { t } from './i18n.js';
import { h, statusLabel } from './views.js';
import { isSequence, sendSequence } from './seqform.js';

// Whether a description already gives the range ("Rack position (1-96)", "架位（1-96）"),
// so the hint does not say it twice.
export function statesRange(description, min, max) {
  const num = (n) => String(n).replace(/[.+-]/g, '\\$&');
  return new RegExp(`(^|[^\\d.])${num(min)}\\s*[-–—~～至到]\\s*${num(max)}($|[^\\d.])`).test(description || '');
}

export class CommandForm {
  constructor(root, commands) {
    this.root = root;
    this.commands = new Map(commands.map((c) => [c.cmd_type, c]));
    this.select = root.querySelector('#cmd-type');
    this.desc = root.querySelector('#cmd-desc');
    this.fields = root.querySelector('#param-fields');
    this.rawWrap = root.querySelector('#raw-wrap');
    this.raw = root.querySelector('#raw-json');
    this.fillSelect(commands);
    this.select.addEventListener('change', () => this.showCommand(this.select.value, null));
    for (const radio of root.querySelectorAll('input[name="input-mode"]')) {
      radio.addEventListener('change', () => this.setMode(radio.value));
    }
    root.querySelector('#file-input').addEventListener('change', (ev) => this.loadFile(ev.target));
    this.mode = 'form';
    if (commands.length) this.showCommand(commands[0].cmd_type, null);
  }

  fillSelect(commands) {
    this.select.replaceChildren(...commands.map((c) => h('option', { value: c.cmd_type, text: c.cmd_type })));
  }

  // After a language switch: the same commands with descriptions in the new
  // language (GET /commands follows Accept-Language); what was typed stays.
  relabel(commands) {
    const current = this.select.value;
    const { params } = this.formCommand(); // the inputs keep their values in raw mode too
    this.commands = new Map(commands.map((c) => [c.cmd_type, c]));
    this.fillSelect(commands);
    if (this.mode === 'form' && this.commands.has(current)) {
      this.showCommand(current, params);
    } else if (this.commands.has(current)) {
      // Raw mode: the text is what will be sent; only the description changes.
      this.select.value = current;
      this.desc.textContent = this.commands.get(current).description;
      this.renderFields(this.commands.get(current), params);
    }
  }

  // Fills the inputs from `params`, or from the command's example when null.
  showCommand(cmdType, params) {
    const command = this.commands.get(cmdType);
    this.select.value = cmdType;
    this.desc.textContent = command ? command.description : '';
    const values = params || (command && command.example && command.example.params) || {};
    this.renderFields(command, values);
    if (this.mode === 'raw') this.raw.value = JSON.stringify(this.formCommand(), null, 2);
  }

  renderFields(command, values) {
    this.fields.replaceChildren();
    const schema = command ? command.params : {};
    if (Object.keys(schema).length === 0) {
      this.fields.append(h('p', { class: 'hint', text: t('web.form.no_params') }));
    }
    for (const [name, spec] of Object.entries(schema)) {
      const id = `param-${name}`;
      const input = h('input', { id, name, 'data-param': name, 'data-kind': spec.type, autocomplete: 'off' });
      if (spec.type === 'number' || spec.type === 'integer') {
        input.type = 'number';
        input.step = spec.type === 'integer' ? '1' : 'any';
        if (spec.minimum !== undefined) input.min = spec.minimum;
        if (spec.maximum !== undefined) input.max = spec.maximum;
      } else {
        input.type = 'text';
        if (spec.type === 'string' && spec.max_length) input.maxLength = spec.max_length;
      }
      const value = values[name];
      if (value !== undefined) input.value = Array.isArray(value) ? value.join(', ') : String(value);
      let hint = spec.description;
      if (spec.type === 'integer_list') hint = t('web.form.comma_separated', { description: spec.description });
      else if (spec.minimum !== undefined && spec.maximum !== undefined
               && !statesRange(spec.description, spec.minimum, spec.maximum)) {
        hint = t('web.form.range', { description: spec.description, min: spec.minimum, max: spec.maximum });
      }
      this.fields.append(h('div', { class: 'field' },
        h('label', { for: id }, name, spec.required ? '' : t('web.form.optional')),
        input,
        h('span', { class: 'hint', text: hint }),
        h('span', { class: 'field-error', 'data-error-for': `params.${name}` })));
    }
  }

  formCommand() {
    const params = {};
    for (const input of this.fields.querySelectorAll('input[data-param]')) {
      const text = input.value.trim();
      if (text === '') continue; // a missing required value is the server's to report
      const kind = input.dataset.kind;
      if (kind === 'integer_list') {
        // Non-numbers are sent as they are, so the server's message names them.
        params[input.dataset.param] = text.split(/[\s,]+/).filter(Boolean)
          .map((word) => (/^-?\d+(\.\d+)?$/.test(word) ? Number(word) : word));
      } else if (kind === 'number' || kind === 'integer') {
        params[input.dataset.param] = Number(text);
      } else {
        params[input.dataset.param] = input.value;
      }
    }
    return { cmd_type: this.select.value, params };
  }

  setMode(mode) {
    if (mode === this.mode) return;
    this.clearErrors();
    if (mode === 'raw') {
      this.raw.value = JSON.stringify(this.formCommand(), null, 2);
    } else {
      const parsed = this.parseRaw();
      if (parsed && this.commands.has(parsed.cmd_type)) this.showCommand(parsed.cmd_type, parsed.params || {});
    }
    this.mode = mode;
    this.rawWrap.hidden = mode !== 'raw';
    this.fields.hidden = mode === 'raw';
    this.root.querySelector(`input[name="input-mode"][value="${mode}"]`).checked = true;
  }

  parseRaw() {
    try { return JSON.parse(this.raw.value); } catch { return null; }
  }

  // The file's text is what gets sent (raw mode), so the operator sees exactly that.
  async loadFile(input) {
    const file = input.files && input.files[0];
    if (!file) return;
    const text = await file.text();
    input.value = '';
    this.setMode('raw');
    this.raw.value = text;
    this.clearErrors();
    const parsed = this.parseRaw();
    if (parsed === null) {
      this.showError('raw', t('web.form.not_json', { file: file.name }));
    } else if (parsed && this.commands.has(parsed.cmd_type)) {
      this.select.value = parsed.cmd_type;
      this.desc.textContent = this.commands.get(parsed.cmd_type).description;
    }
    this.root.querySelector('#submit-result').textContent = t('web.form.loaded', { file: file.name });
  }

  // The body to POST, or null after showing why it cannot be sent.
  command() {
    this.clearErrors();
    if (this.mode === 'form') return this.formCommand();
    const parsed = this.parseRaw();
    if (parsed === null) {
      let why = '';
      try { JSON.parse(this.raw.value); } catch (err) { why = err.message; }
      this.showError('raw', t('web.form.invalid_json', { reason: why }));
      return null;
    }
    return parsed;
  }

  clearErrors() {
    for (const el of this.root.querySelectorAll('.field-error')) el.textContent = '';
    for (const el of this.root.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  // Puts the message next to the named field; in raw mode, under the JSON.
  showError(field, message) {
    let slot = field ? this.root.querySelector(`.field-error[data-error-for="${CSS.escape(field)}"]`) : null;
    if (this.mode === 'raw' && field !== 'cmd_type') slot = null;
    if (!slot || slot.closest('[hidden]')) {
      slot = this.root.querySelector('.field-error[data-error-for="raw"]');
      if (this.mode !== 'raw') slot = null;
    }
    if (!slot) return false;
    slot.textContent = this.mode === 'raw' && field && field !== 'raw' && field !== 'cmd_type' ? `${field}: ${message}` : message;
    const input = slot.parentElement.querySelector('input, select, textarea');
    if (input) input.setAttribute('aria-invalid', 'true');
    return true;
  }

  // The optional "not before" (a datetime-local, in the browser's time zone, which is the
  // server's, as views.js parseTime assumes) in the guide's format, or null.
  notBefore() {
    const value = this.root.querySelector('#not-before').value; // 2026-12-07T14:30[:05]
    if (!value) return null;
    const [date, time] = value.split('T');
    return `${date} ${time.length === 5 ? `${time}:00` : time.slice(0, 8)}`;
  }

  // POST / (or /validate) and say what came of it under the buttons. Raw JSON that
  // is a sequence (an object with `steps`) goes to POST /sequences (?dry_run=1).
  async send(validateOnly) {
    const body = this.command();
    const out = this.root.querySelector('#submit-result');
    out.textContent = '';
    if (body === null) return;
    const later = this.notBefore();
    if (later && body && typeof body === 'object' && body.not_before === undefined) body.not_before = later;
    if (isSequence(body)) {
      await sendSequence(body, validateOnly, out);
      return;
    }
    try {
      const { status, data } = await api('POST', validateOnly ? '/validate' : '/', body);
      if (validateOnly) out.textContent = data.message;
      else if (status === 202) {
        out.textContent = t('web.submit.queued', { task_id: data.task_id })
          + (data.queue_position ? t('web.submit.position', { position: data.queue_position }) : '')
          + (data.warning ? t('web.common.warning_suffix', { warning: data.warning }) : '');
      } else {
        out.textContent = t('web.submit.finished', {
          task_id: data.task_id, status: statusLabel(data.status), message: data.message,
        });
      }
    } catch (err) {
      if (err instanceof ApiError && (err.status === 422 || err.field === 'not_before') && this.showError(err.field, err.message)) {
        out.textContent = t('web.submit.see_field');
      } else if (err instanceof ApiError) {
        out.textContent = t('web.submit.not_accepted', { message: err.message });
      } else {
        out.textContent = t('web.error.request_failed', { reason: err.message });
      }
    }
  }
}
