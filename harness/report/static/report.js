// The report's charts, filters and sorting: draws each cell's chart from the page's data
// block (harness/report/html.py, chart_data) when it scrolls into view.
const DATA = JSON.parse(document.getElementById('chart-data').textContent);
const COLOURS = DATA.colours;
function hover(cell) {
  return cell.x.map(i => { const r = DATA.runs[i]; return [r[0], r[1], r[2], r[3], r[4]]; });
}
function draw(div) {
  const cell = DATA.cells[div.dataset.cell];
  const rows = Object.entries(DATA.labels).filter(([key]) => key === 'speed' || cell[key]);
  const n = rows.length, gap = 0.04, h = (1 - gap * (n - 1)) / n;
  const custom = hover(cell);
  const tpl = '%{y}<br>run %{customdata[0]}<br>%{customdata[1]}<br>harness %{customdata[2]}' +
              '<br>torch %{customdata[3]}, transformers %{customdata[4]}<extra></extra>';
  const traces = [], shapes = [], annotations = [];
  const layout = {height: 140 + 150 * n, margin: {l: 60, r: 10, t: 30, b: 40}, showlegend: false,
                  hovermode: 'closest', title: {text: div.dataset.cell, font: {size: 13}}};
  rows.forEach(([key, label], k) => {
    const axis = k === 0 ? '' : String(k + 1);
    const top = 1 - k * (h + gap);
    layout['yaxis' + axis] = {domain: [top - h, top], title: {text: label, font: {size: 11}}};
    const every = Math.max(1, Math.ceil(cell.x.length / 12)), ticks = cell.x.filter((_, j) => j % every === 0);
    layout['xaxis' + axis] = {anchor: 'y' + axis, matches: k === 0 ? undefined : 'x', showticklabels: k === n - 1,
                              tickvals: ticks, ticktext: ticks.map(i => DATA.runs[i][0].slice(0, 15)),
                              tickangle: -30, tickfont: {size: 9}};
    traces.push({x: cell.x, y: cell[key], xaxis: 'x' + axis, yaxis: 'y' + axis, mode: 'lines+markers',
                 type: 'scatter', customdata: custom, hovertemplate: tpl,
                 marker: {size: 6, color: cell.verdict.map(v => COLOURS[v] || '#1565c0')}, line: {color: '#90a4ae'}});
    const last = cell.x[cell.x.length - 1] + 0.5, from = (cell.band_from ?? cell.x[0]) - 0.5;
    if (k === 0 && cell.band) {
      shapes.push({type: 'rect', xref: 'x', yref: 'y', x0: from, x1: last,
                   y0: cell.band[0], y1: cell.band[1], fillcolor: 'rgba(21,101,192,0.10)', line: {width: 0}});
      annotations.push({xref: 'x', yref: 'y', x: from, y: cell.band[1], text: cell.band_label,
                        showarrow: false, xanchor: 'left', yanchor: 'bottom', font: {size: 9, color: '#1565c0'}});
    }
    if (k === 0 && cell.threshold_line) {
      shapes.push({type: 'line', xref: 'x', yref: 'y', x0: from, x1: last, y0: cell.threshold_line,
                   y1: cell.threshold_line, line: {color: '#c62828', dash: 'dot', width: 1}});
      annotations.push({xref: 'x', yref: 'y', x: last, y: cell.threshold_line, text: 'threshold ' + cell.threshold,
                        showarrow: false, xanchor: 'right', yanchor: 'top', font: {size: 9, color: '#c62828'}});
    }
  });
  cell.changes.forEach(([i, metric, change]) => {
    shapes.push({type: 'line', xref: 'x', yref: 'paper', x0: i - 0.5, x1: i - 0.5, y0: 0, y1: 1,
                 line: {color: '#ef6c00', dash: 'dash', width: 1.5}});
    annotations.push({xref: 'x', yref: 'paper', x: i - 0.5, y: 1, text: 'change ' + metric.replace(/_/g, ' ') + ' ' +
                      (change * 100).toFixed(1) + '%', showarrow: false, yanchor: 'bottom', font: {size: 9, color: '#ef6c00'}});
  });
  cell.accepted.forEach(([i, why]) => {
    shapes.push({type: 'line', xref: 'x', yref: 'paper', x0: i - 0.5, x1: i - 0.5, y0: 0, y1: 1,
                 line: {color: '#2e7d32', width: 2}});
    annotations.push({xref: 'x', yref: 'paper', x: i - 0.5, y: 0, text: 'accepted', hovertext: why,
                      showarrow: false, yanchor: 'top', font: {size: 9, color: '#2e7d32'}});
  });
  layout.shapes = shapes; layout.annotations = annotations;
  Plotly.newPlot(div, traces, layout, {displaylogo: false, responsive: true});
  div.dataset.drawn = '1';
}
const seen = new IntersectionObserver(entries => entries.forEach(e => {
  if (e.isIntersecting && !e.target.dataset.drawn) { draw(e.target); seen.unobserve(e.target); }
}), {rootMargin: '400px'});
document.querySelectorAll('.chart').forEach(div => seen.observe(div));
function applyFilters() {
  const wanted = {};
  document.querySelectorAll('#filters select').forEach(s => { if (s.value) wanted[s.dataset.axis] = s.value; });
  const match = el => Object.entries(wanted).every(([a, v]) => el.getAttribute('data-' + a) === v);
  let shown = 0;
  document.querySelectorAll('#verdicts tbody tr').forEach(tr => { tr.style.display = match(tr) ? '' : 'none'; });
  document.querySelectorAll('.cellbox').forEach(box => {
    const ok = match(box); box.style.display = ok ? '' : 'none'; if (ok) shown++;
    const div = box.querySelector('.chart');
    if (ok && !div.dataset.drawn && box.getBoundingClientRect().top < innerHeight) draw(div);
  });
  document.getElementById('shown').textContent = shown + ' of ' + document.querySelectorAll('.cellbox').length + ' cells shown';
}
document.querySelectorAll('#filters select').forEach(s => s.addEventListener('change', applyFilters));
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], rows = [...body.rows];
  const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  const key = r => r.cells[col].dataset.sort;
  rows.sort((a, b) => th.dataset.kind === 'n'
    ? dir * ((parseFloat(key(a)) || -Infinity) - (parseFloat(key(b)) || -Infinity))
    : dir * key(a).localeCompare(key(b)));
  rows.forEach(r => body.appendChild(r));
}));
applyFilters();
document.body.dataset.ready = '1';
