"""Style and the one browser script, injected into the page head by the header component.

The script turns every `<time class="ts" datetime="...">` into the viewer's local time plus a relative form, and
keeps the relative form current: done in the browser because only the browser knows the viewer's time zone.
"""

CSS = """
.bridge-top { align-items: center !important; }
.bridge-header { display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; padding: 2px; }
.bridge-header h1 { font-size: 1.55rem; margin: 0; font-weight: 700; letter-spacing: -0.01em; }
.bridge-header .tagline { color: var(--body-text-color-subdued); font-size: 0.92rem; }
.bridge-header .grow { flex: 1; }
#who { text-align: right; }
.who { display: inline-block; font-size: 0.88rem; padding: 4px 12px; border-radius: 999px;
       border: 1px solid var(--border-color-primary);
       background: var(--background-fill-secondary); }
.who.ok { border-color: #16a34a66; } .who.no { border-color: #d9770666; }
.muted { color: var(--body-text-color-subdued); }
.warn-text { color: #b45309; } .ok-text { color: #15803d; } .dark .ok-text { color: #4ade80; }
svg.icon { display: inline-block; vertical-align: -2px; flex: none; }
.notice svg.icon { margin-right: 2px; }
.card.sandbox { border-color: #f59e0b88; background: #f59e0b0d; }
.card.sandbox a.pill { margin-right: 4px; }
.last .useful, .last .latest { margin-left: 10px; }
.last .latest.echo { opacity: 0.8; }
.pager { gap: 8px; }
.page-line { font-size: 0.85rem; margin: 4px 0; }
.badge::before { content: ""; display: inline-block; width: 7px; height: 7px; border-radius: 50%;
                 background: currentColor; margin-right: 5px; vertical-align: 1px; opacity: 0.8; }
.fb-controls button.fb { display: inline-flex; align-items: center; gap: 4px; }
.card { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 14px 16px !important;
        background: var(--block-background-fill); }
.card h3, .sect h3 { margin: 0 0 6px; font-size: 1.02rem; font-weight: 650; }
.card p { margin: 4px 0 8px; }
p.flow { margin: 0 !important; line-height: 1.45; font-size: 0.93rem; }
.nowrap { white-space: nowrap; }
.steps { margin: 6px 0 0 18px; padding: 0; line-height: 1.5; font-size: 0.92rem; }
.stats { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; margin: 4px 0 10px; }
.stat { border-radius: 10px; padding: 8px 10px; background: var(--background-fill-secondary);
        display: flex; flex-direction: column; border-left: 4px solid #94a3b8; }
.stat b { font-size: 1.35rem; line-height: 1.1; }
.stat span { font-size: 0.8rem; color: var(--body-text-color-subdued); }
.stat.st-running { border-left-color: #2563eb; } .stat.st-succeeded { border-left-color: #16a34a; }
.stat.st-failed, .stat.st-dead { border-left-color: #dc2626; } .stat.st-queued { border-left-color: #a16207; }
.stat.st-scheduled { border-left-color: #64748b; }
.last { margin: 4px 0; font-size: 0.92rem; }
h4 { margin: 8px 0 4px; font-size: 0.9rem; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 6px 0; font-size: 0.92rem; }
.kv dt { color: var(--body-text-color-subdued); } .kv dd { margin: 0; }
.notice { border-radius: 8px; padding: 8px 12px; margin: 6px 0; font-size: 0.92rem; border: 1px solid; }
.notice.info { background: #3b82f614; border-color: #3b82f640; }
.notice.ok { background: #16a34a14; border-color: #16a34a55; }
.notice.warn { background: #f59e0b1a; border-color: #f59e0b66; }
.notice.error { background: #dc262614; border-color: #dc262655; }
.empty { padding: 22px; text-align: center; color: var(--body-text-color-subdued); border: 1px dashed
         var(--border-color-primary); border-radius: 10px; }
.tbl-wrap { overflow-x: auto; }
/* gradio's prose style draws a dark border on every cell; these tables use row rules only */
.prose table.tbl, .prose table.tbl tr, .prose table.tbl th, .prose table.tbl td { border: none !important; }
table.tbl { width: 100%; border-collapse: collapse; font-size: 0.88rem; margin: 4px 0 !important; }
table.tbl th { text-align: left; font-weight: 600; padding: 7px 8px;
               position: sticky; top: 0; background: var(--block-background-fill); white-space: nowrap; }
.prose table.tbl td { padding: 6px 8px; border-bottom: 1px solid var(--border-color-primary) !important;
                      vertical-align: top; }
.prose table.tbl th { border-bottom: 2px solid var(--border-color-primary) !important; }
.prose table.tbl.compact td { padding: 5px 6px; }
table.tbl .use { font-size: 0.8rem; color: var(--body-text-color-subdued); }
table.jobs tr.job-row { cursor: pointer; }
table.jobs tr.job-row:hover td { background: var(--background-fill-secondary); }
table.jobs tr.selected td { background: #3b82f61f !important; }
/* long subjects and errors wrap to two lines (full text in the detail and the tooltip) instead of widening the table */
table.jobs td .subject, table.jobs td .err { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
                                             overflow: hidden; word-break: break-word; min-width: 120px; }
.err { color: #b91c1c; } .dark .err { color: #f87171; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 0.8rem; font-weight: 600;
         white-space: nowrap; background: #94a3b833; }
.badge.st-succeeded, .badge.st-uploaded, .badge.st-exists { background: #16a34a26; color: #15803d; }
.badge.st-running { background: #2563eb26; color: #1d4ed8; }
.badge.st-queued { background: #f59e0b26; color: #a16207; }
.badge.st-scheduled { background: #64748b26; color: #475569; }
.badge.st-failed, .badge.st-dead, .badge.st-crashed { background: #dc262626; color: #b91c1c; }
.badge.st-ignored, .badge.st-duplicate, .badge.st-cancelled, .badge.st-skipped { background: #94a3b833; }
.dark .badge { color: inherit !important; }
a.pill { display: inline-block; padding: 1px 8px; border-radius: 999px; border: 1px solid var(--border-color-primary);
         font-size: 0.8rem; text-decoration: none; white-space: nowrap; margin: 1px 0; }
a.pill:hover { background: var(--background-fill-secondary); }
.progress { display: inline-block; width: 70px; height: 6px; border-radius: 3px; background: #94a3b844;
            margin: 0 6px; vertical-align: middle; overflow: hidden; }
.progress div { height: 100%; background: #2563eb; }
.state { margin-right: 4px; }
.job-detail { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 14px 16px; }
.detail-head { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
.detail-head h2 { margin: 0; font-size: 1.2rem; }
.sect { margin-top: 14px; } .sect .hint { font-weight: 400; font-size: 0.8rem; margin-left: 8px;
                                          color: var(--body-text-color-subdued); }
pre.code { background: var(--background-fill-secondary); border-radius: 8px; padding: 10px 12px; font-size: 0.8rem;
           max-height: 420px; overflow: auto; white-space: pre-wrap; word-break: break-word; margin: 4px 0; }
details summary { cursor: pointer; color: var(--body-text-color-subdued); font-size: 0.88rem; margin-top: 8px; }
.field-error { color: #b91c1c; font-size: 0.86rem; margin-top: -4px; }
.run-card { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px 14px; margin-bottom: 12px;
            background: var(--block-background-fill); }
.run-card header { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin-bottom: 6px; }
.run-card .grow { flex: 1; }
.run-card .io { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
@media (max-width: 800px) { .run-card .io { grid-template-columns: 1fr; } }
.run-card h4 { margin: 2px 0 4px; font-size: 0.78rem; text-transform: uppercase; letter-spacing: 0.04em;
               color: var(--body-text-color-subdued); }
pre.io-text { white-space: pre-wrap; word-break: break-word; font-family: inherit; font-size: 0.9rem; margin: 0;
              background: var(--background-fill-secondary); border-radius: 8px; padding: 8px 10px; max-height: 220px;
              overflow: auto; }
.chip { display: inline-block; padding: 1px 8px; border-radius: 999px; background: var(--background-fill-secondary);
        font-size: 0.8rem; margin: 2px 4px 2px 0; }
.fb-existing { margin: 8px 0 4px; }
.fb-controls { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin-top: 6px; }
.fb-controls button, .fb-controls select, .fb-controls input { border: 1px solid var(--border-color-primary);
        border-radius: 8px; padding: 4px 10px; background: var(--background-fill-primary); font-size: 0.9rem;
        color: var(--body-text-color); }
.fb-controls button.fb.up, .fb-controls button.fb.down { padding: 4px 12px; }
.fb-controls button.send { font-size: 0.85rem; font-weight: 500; }
.fb-controls button:hover { background: var(--background-fill-secondary); }
.fb-controls input.fb-comment { flex: 1; min-width: 180px; }
.fb-sent { font-size: 0.85rem; color: var(--body-text-color-subdued); margin-top: 6px; }
time.ts .abs { color: var(--body-text-color-subdued); font-size: 0.85em; }
.filters { align-items: end; }
"""

JS = r"""
(() => {
  if (window.bridgeTimes) return;
  const units = [[60, 'second'], [60, 'minute'], [24, 'hour'], [30, 'day'], [12, 'month'], [Infinity, 'year']];
  function relative(date) {
    let amount = (date.getTime() - Date.now()) / 1000;
    if (Math.abs(amount) < 45) return 'just now';
    const format = new Intl.RelativeTimeFormat(undefined, {numeric: 'auto', style: 'short'});
    for (const [size, unit] of units) {
      if (Math.abs(amount) < size) return format.format(Math.round(amount), unit);
      amount /= size;
    }
  }
  function local(date) {
    const sameDay = new Date().toDateString() === date.toDateString();
    const options = sameDay ? {hour: '2-digit', minute: '2-digit'}
                            : {month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit'};
    return date.toLocaleString(undefined, options);
  }
  function render(element) {
    const date = new Date(element.getAttribute('datetime'));
    if (isNaN(date)) return;
    element.title = date.toLocaleString();
    const rel = document.createElement('span'); rel.className = 'rel'; rel.textContent = relative(date);
    const abs = document.createElement('span'); abs.className = 'abs'; abs.textContent = local(date);
    element.replaceChildren(rel, ' ', abs);
    element.dataset.local = '1';
  }
  window.bridgeShowDetail = () => {
    const detail = document.getElementById('job-detail');
    if (detail) setTimeout(() => detail.scrollIntoView({behavior: 'smooth', block: 'start'}), 60);
  };
  window.bridgeTimes = (all) => {
    document.querySelectorAll(all ? 'time.ts' : 'time.ts:not([data-local])').forEach(render);
  };
  new MutationObserver(() => window.bridgeTimes(false)).observe(document.documentElement,
                                                                {childList: true, subtree: true});
  setInterval(() => window.bridgeTimes(true), 30000);
  window.bridgeTimes(true);
})();
"""

HEAD = f"<style>{CSS}</style><script>{JS}</script>"
