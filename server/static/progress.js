// A running task's items from `progress` events that carry only the new ones
// (items_from: the index of the first; items_count: how many so far). Items an event had
// no room for, or events missed, leave a gap: GET /task has them all, asked at most
// every GAP_FETCH_MS while the gap lasts (the task's final event carries them all anyway).

const GAP_FETCH_MS = 2000;

// The items known after `progress`, or null when it starts past them (a gap).
export function mergeItems(known, progress) {
  const items = progress.items || [];
  const from = progress.items_from;
  if (from === undefined) return items; // the whole list (a server without deltas)
  if (from > known.length) return null; // a gap
  if (from + items.length > known.length) known.splice(from, known.length - from, ...items);
  return known; // never shorter: events replayed after a reload are older than it
}

// The running task `run` after a progress event; false if the event left a gap.
export function mergeProgress(run, progress) {
  const known = (run.progress && run.progress.items) || [];
  const items = mergeItems(known, progress);
  run.progress = { ...progress, items: items || known };
  return items !== null;
}

// The running task `run` takes the items of its document `doc` if it has more; true then.
export function adoptItems(run, doc) {
  const known = (run && run.progress && run.progress.items) || [];
  const items = (doc.progress && doc.progress.items) || [];
  if (!run || run.task_id !== doc.task_id || items.length <= known.length) return false;
  run.progress = { ...run.progress, items };
  return true;
}

// fill(id) reads the task at most every GAP_FETCH_MS and hands its document to `onDoc`.
export function gapFiller(read, onDoc) {
  const gap = { timer: null, last: 0 };
  return function fill(id) {
    if (gap.timer) return; // one is due: it reads everything there is by then
    gap.timer = setTimeout(async () => {
      gap.last = Date.now();
      try {
        onDoc(id, await read(id));
      } catch { /* the next gap asks again */ }
      gap.timer = null;
    }, Math.max(0, gap.last + GAP_FETCH_MS - Date.now()));
  };
}
