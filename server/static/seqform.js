// Sequences from the submit panel (docs/sequences.md). The builder takes each step from
// the command form above (its cmd_type and params inputs, or its raw JSON), keeps them in
// order (up, down, remove) and sends them as one sequence to POST /sequences. A sequence
// pasted or loaded as JSON (an object with `steps`) goes the same way from form.js. The
// server is the only validator: a 422 `sequence_invalid` lists its errors by step number.

import { api, ApiError } from './api.js';
import { t } from './i18n.js';
import { h, paramsSummary, formatDuration } from './views.js';

const STEP_KEYS = ['cmd_type', 'params', 'label', 'on_error', 'retry'];

export const isSequence = (body) => Boolean(body && typeof body === 'object' && !Array.isArray(body)
  && Array.isArray(body.steps));

function errorText(e) {
  if (e.step === null || e.step === undefined) return t('web.seqform.error_sequence', { message: e.message });
  return e.field
    ? t('web.seqform.error_step_field', { step: e.step, field: e.field, message: e.message })
    : t('web.seqform.error_step', { step: e.step, message: e.message });
}

// POST /sequences (?dry_run=1 to validate only) and say what came of it in `out`.
// Returns whether it was accepted and a 422's errors, so the builder can mark its steps.
export async function sendSequence(body, dryRun, out) {
  out.replaceChildren();
  try {
    const { data } = await api('POST', dryRun ? '/sequences?dry_run=1' : '/sequences', body);
    if (dryRun) {
      const est = data.plan ? data.plan.estimated_s : null;
      out.textContent = data.message + (est === null || est === undefined
        ? t('web.seqform.estimate_unknown') : t('web.seqform.estimate', { duration: formatDuration(est) }));
    } else {
      out.textContent = t('web.seqform.queued', { sequence_id: data.sequence_id, n: (data.task_ids || []).length })
        + (data.queue_position ? t('web.submit.position', { position: data.queue_position }) : '');
    }
    return { ok: true, errors: [] };
  } catch (err) {
    if (!(err instanceof ApiError)) {
      out.textContent = t('web.error.request_failed', { reason: err.message });
      return { ok: false, errors: [] };
    }
    out.textContent = t('web.submit.not_accepted', { message: err.message });
    const errors = err.body && Array.isArray(err.body.errors) ? err.body.errors : [];
    if (errors.length) {
      out.append(h('ul', { class: 'seq-errors' }, errors.map((e) => h('li', {
        dataset: { step: e.step === null || e.step === undefined ? '' : String(e.step) }, text: errorText(e) }))));
    }
    return { ok: false, errors };
  }
}

export class SequenceBuilder {
  constructor(root, form) {
    this.root = root;
    this.form = form;
    this.steps = [];
    this.errors = new Map(); // step number (from 1) -> its errors' text
    this.list = root.querySelector('#seq-steps');
    this.empty = root.querySelector('#seq-steps-empty');
    this.out = root.querySelector('#seq-result');
    this.name = root.querySelector('#seq-name');
    this.rule = root.querySelector('#seq-on-error');
    this.confirmMessage = root.querySelector('#seq-confirm-message');
    root.querySelector('#seq-add').addEventListener('click', () => this.addFromForm());
    root.querySelector('#seq-add-confirm').addEventListener('click', () => this.addConfirm());
    root.querySelector('#seq-submit').addEventListener('click', () => this.send(false));
    root.querySelector('#seq-validate').addEventListener('click', () => this.send(true));
    root.querySelector('#seq-clear').addEventListener('click', () => {
      this.steps = [];
      this.out.replaceChildren();
      this.changed();
    });
    this.render();
  }

  // The command the form holds now; raw JSON that is itself a sequence adds all its steps.
  addFromForm() {
    const body = this.form.command(); // null: the form has said why (invalid JSON)
    if (body === null || typeof body !== 'object') return;
    const steps = isSequence(body) ? body.steps : [body];
    for (const step of steps) {
      const copy = {};
      for (const key of STEP_KEYS) if (step && step[key] !== undefined) copy[key] = step[key];
      this.steps.push(copy);
    }
    if (isSequence(body) && body.name && !this.name.value) this.name.value = body.name;
    this.out.textContent = t('web.seqform.added', { n: steps.length, total: this.steps.length });
    this.changed();
  }

  // CONFIRM is built into sequences (not a robot command): its message is asked here.
  addConfirm() {
    this.steps.push({ cmd_type: 'CONFIRM', params: { message: this.confirmMessage.value.trim() } });
    this.confirmMessage.value = '';
    this.out.textContent = t('web.seqform.added', { n: 1, total: this.steps.length });
    this.changed();
  }

  move(i, delta, focusClass) {
    const j = i + delta;
    if (j < 0 || j >= this.steps.length) return;
    [this.steps[i], this.steps[j]] = [this.steps[j], this.steps[i]];
    this.changed();
    // Keep the keyboard where it was: on the same button of the step that moved.
    const button = this.list.querySelector(`li[data-index="${j}"] .${focusClass}`);
    if (button && !button.disabled) button.focus();
  }

  remove(i) {
    this.steps.splice(i, 1);
    this.changed();
  }

  changed() {
    this.errors.clear(); // the numbers no longer match what the server checked
    this.render();
  }

  body() {
    const body = { steps: this.steps };
    const name = this.name.value.trim();
    if (name) body.name = name;
    body.on_error = this.rule.value;
    return body;
  }

  async send(dryRun) {
    if (this.steps.length === 0) {
      this.out.textContent = t('web.seqform.no_steps');
      return;
    }
    const { ok, errors } = await sendSequence(this.body(), dryRun, this.out);
    this.errors.clear();
    for (const e of errors) {
      if (e.step === null || e.step === undefined) continue;
      this.errors.set(e.step, [this.errors.get(e.step), e.message].filter(Boolean).join(' '));
    }
    if (ok && !dryRun) {
      this.steps = [];
      this.name.value = '';
    }
    this.render();
  }

  render() {
    const last = this.steps.length - 1;
    this.list.replaceChildren(...this.steps.map((step, i) => {
      const n = i + 1;
      const error = this.errors.get(n);
      return h('li', { class: error ? 'seq-step invalid' : 'seq-step', dataset: { index: String(i) } },
        h('span', { class: 'step-no', text: String(n) }),
        h('div', { class: 'seq-step-main' },
          h('strong', { text: String(step.cmd_type ?? '') }),
          step.label ? h('span', { class: 'seq-step-label', text: ` ${step.label}` }) : null,
          h('div', { class: 'params', text: paramsSummary(step.params) }),
          error ? h('div', { class: 'field-error', text: error }) : null),
        h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'secondary seq-up', disabled: i === 0, onclick: () => this.move(i, -1, 'seq-up'),
            'aria-label': t('web.seqform.up_label', { n }), text: t('web.seqform.up') }),
          h('button', { type: 'button', class: 'secondary seq-down', disabled: i === last, onclick: () => this.move(i, 1, 'seq-down'),
            'aria-label': t('web.seqform.down_label', { n }), text: t('web.seqform.down') }),
          h('button', { type: 'button', class: 'secondary seq-remove', onclick: () => this.remove(i),
            'aria-label': t('web.seqform.remove_label', { n }), text: t('web.seqform.remove') })));
    }));
    this.empty.hidden = this.steps.length > 0;
  }
}
