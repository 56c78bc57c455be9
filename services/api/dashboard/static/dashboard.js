// The dashboard's pages: read the API's JSON (the login cookie is the key) and draw it with Chart.js.
// Every chart keeps the numbers the API answered, unrounded, so a test can compare the two.
"use strict";

const Pulse = (() => {
  const PIPELINE_MS = 5000;
  const CUSTOMERS_MS = 30000;
  const HISTORY = 60; // throughput points kept (5 minutes at 5 s)
  const charts = {};
  const palette = ["#2563eb", "#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
  const fmt = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });

  class Unauthorized extends Error {}

  // The session ended (logged out elsewhere, the key revoked, its time up): to the login form, and back.
  function toLogin(url) {
    window.location.assign("/dashboard/login?next=" + encodeURIComponent(window.location.pathname));
    throw new Unauthorized(url);
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) toLogin(url);
    if (response.status === 404) return null;
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      throw new Error(`${url}: ${response.status} ${detail}`);
    }
    return response.json();
  }

  function text(id, value) {
    const element = document.getElementById(id);
    if (element) element.textContent = value === null || value === undefined ? "–" : value;
  }

  function number(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return digits === undefined ? fmt.format(value) : value.toFixed(digits);
  }

  function status(message, failed) {
    const element = document.getElementById("status");
    element.textContent = message;
    element.classList.toggle("failed", Boolean(failed));
  }

  // Create the chart once, then only swap its data (no flicker, no leak on every refresh).
  function draw(id, config) {
    const existing = charts[id];
    if (existing) {
      existing.data = config.data;
      if (config.options) existing.options = config.options;
      existing.update("none");
      return existing;
    }
    const canvas = document.getElementById(id);
    config.options = Object.assign({ responsive: true, maintainAspectRatio: true, animation: false }, config.options);
    charts[id] = new Chart(canvas, config);
    return charts[id];
  }

  function bars(id, labels, values, label, color, extra) {
    return draw(id, {
      type: "bar",
      data: { labels, datasets: [{ label, data: values, backgroundColor: color || palette[0] }] },
      options: Object.assign({ plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } }, extra),
    });
  }

  function binLabels(histogram, unit) {
    const edges = histogram.edges;
    return histogram.counts.map((_, i) => {
      const low = edges[i], high = edges[i + 1];
      if (high === undefined) return `≥ ${fmt.format(low)}${unit}`;
      return `${fmt.format(low)}–${fmt.format(high)}${unit}`;
    });
  }

  function histogram(id, data, unit, color) {
    return bars(id, binLabels(data, unit), data.counts, "customers", color);
  }

  // ---------------------------------------------------------------- the pipeline, every 5 s
  const history = { labels: [], signups: [], events: [] };
  let previous = null;
  let lastPipeline = null;

  function rate(now, before, key, seconds) {
    if (!before || now[key] === null || before[key] === null) return null;
    const delta = now[key] - before[key];
    return delta >= 0 ? delta / seconds : null; // an API restart resets its counters
  }

  async function refreshPipeline() {
    const data = await getJSON("/api/pipeline");
    lastPipeline = data;
    const reading = { at: Date.now(), signups: data.signups_total, events: data.events_stored_total };
    const seconds = previous ? (reading.at - previous.at) / 1000 : null;
    const signups = seconds ? rate(reading, previous, "signups", seconds) : null;
    const events = seconds ? rate(reading, previous, "events", seconds) : null;
    previous = reading;

    text("signups-rate", number(signups, 1));
    text("signups-total", data.signups_total === null ? "metrics off" : `${number(data.signups_total)} since the API started`);
    text("events-rate", number(events, 1));
    text("events-total", `${number(data.events_stored_total)} stored, ${number(data.events_duplicate_total)} duplicates`);
    text("outbox-pending", number(data.outbox_pending));
    text("outbox-age", data.outbox_oldest_pending_age_seconds ? `oldest ${number(data.outbox_oldest_pending_age_seconds, 1)} s` : "none waiting");
    text("dead-letters", number(data.dead_letters));
    const retrying = data.retry_backlog;
    text("retry-backlog", retrying ? number(Object.values(retrying).reduce((a, b) => a + b, 0)) : "–");
    text("retry-detail", retrying ? `${number(retrying.events)} batches, ${number(retrying.erasures)} erasures, ${number(retrying.signups)} signups` : "Postgres unreachable");
    text("rescore-backlog", number(data.rescore_pending_users));
    text("rescore-detail", `${number(data.rescore_queued_users)} queued in Redis, ${number(data.profiles_rescored_total)} rescored`);
    const cache = data.profile_cache || {};
    const hits = cache.hits || 0, reads = hits + (cache.misses || 0) + (cache.bypassed || 0);
    text("cache-ratio", reads ? `${number((100 * hits) / reads, 1)} %` : "–");
    text("cache-detail", `${number(hits)} hits of ${number(reads)} reads`);

    history.labels.push(new Date(reading.at).toLocaleTimeString());
    history.signups.push(signups);
    history.events.push(events);
    for (const series of Object.values(history)) if (series.length > HISTORY) series.shift();
    draw("throughput-chart", {
      type: "line",
      data: {
        labels: history.labels.slice(),
        datasets: [
          { label: "signups / s", data: history.signups.slice(), borderColor: palette[0], backgroundColor: palette[0], yAxisID: "y" },
          { label: "events stored / s", data: history.events.slice(), borderColor: palette[1], backgroundColor: palette[1], yAxisID: "y1" },
        ],
      },
      options: {
        spanGaps: true,
        scales: {
          y: { beginAtZero: true, position: "left", title: { display: true, text: "signups / s" } },
          y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "events / s" } },
        },
      },
    });
    const queues = data.queues.filter((q) => q.messages !== null);
    draw("queues-chart", {
      type: "bar",
      data: {
        labels: queues.map((q) => q.name),
        datasets: [{ label: "messages", data: queues.map((q) => q.messages), backgroundColor: queues.map((q) => q.name.endsWith("dead_letter") ? palette[2] : palette[0]) }],
      },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    drawLag(data.ingestion_lag);
    const down = Object.entries(data.sources || {}).filter(([, up]) => !up).map(([name]) => name);
    return down;
  }

  // The smallest bucket bound holding the q-th share of the events (the histogram's resolution).
  function lagQuantile(lag, q) {
    const rank = q * lag.count;
    const bucket = lag.buckets.find((b) => b.count >= rank);
    return bucket ? bucket.le : null;
  }

  function seconds(le) {
    return le === "+Inf" ? "> 60 s" : `≤ ${le} s`;
  }

  function drawLag(lag) {
    if (!lag) {
      text("lag-p95", "–");
      text("lag-detail", "Redis unreachable");
      return;
    }
    text("lag-p95", lag.count ? seconds(lagQuantile(lag, 0.95)) : "–");
    text("lag-detail", lag.count
      ? `median ${seconds(lagQuantile(lag, 0.5))}, mean ${number(lag.sum / lag.count, 3)} s over ${number(lag.count)} events`
      : "no events stored yet");
    let below = 0;
    draw("lag-chart", {
      type: "bar",
      data: {
        labels: lag.buckets.map((b) => seconds(b.le)),
        datasets: [{ label: "events", data: lag.buckets.map((b) => { const n = b.count - below; below = b.count; return n; }), backgroundColor: palette[1] }],
      },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  // ---------------------------------------------------------------- the customers, every 30 s
  async function refreshCustomers(modelVersion) {
    const [segments, categories, stats, top, validations, holdout] = await Promise.all([
      getJSON("/api/analytics/segments"),
      getJSON("/api/analytics/categories/top?limit=10"),
      getJSON("/api/analytics/customers"),
      getJSON("/api/users/top?min_score=0&limit=10"),
      getJSON("/api/analytics/models/validations?limit=1"),
      getJSON("/api/analytics/models/holdout?limit=300"),
    ]);
    // Before the first fit the latest model is a 404 (logged by the browser): ask only when one exists.
    const model = modelVersion !== null && modelVersion !== undefined ? await getJSON("/api/analytics/models/latest") : null;

    bars("segments-chart", segments.items.map((s) => s.segment), segments.items.map((s) => s.users), "users", palette.slice(0, segments.items.length));
    bars("categories-chart", categories.items.map((c) => c.category), categories.items.map((c) => c.total_sales), "sales", palette[3], { indexAxis: "y", scales: { x: { beginAtZero: true } } });

    if (stats) {
      histogram("churn-chart", stats.churn_risk, " %", palette[2]);
      text("churn-note", `${number(stats.customers)} customers, ${new Date(stats.computed_at).toLocaleTimeString()}`);
      document.getElementById("palive-empty").hidden = Boolean(stats.p_alive);
      if (stats.p_alive) histogram("palive-chart", stats.p_alive, "", palette[1]);
      if (stats.scoring_model) text("palive-note", `from ${MODEL_LABELS[stats.scoring_model] || stats.scoring_model}`);
      if (stats.p_alive_by_buyers) {
        const split = stats.p_alive_by_buyers;
        draw("palive-split-chart", {
          type: "bar",
          data: {
            labels: binLabels(split.one_time, ""),
            datasets: [
              { label: "one-time buyers", data: split.one_time.counts, backgroundColor: palette[3] },
              { label: "repeat buyers", data: split.repeat.counts, backgroundColor: palette[1] },
            ],
          },
          options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
        });
      }
      document.getElementById("ltv-empty").hidden = Boolean(stats.predicted_ltv);
      if (stats.predicted_ltv) {
        histogram("ltv-chart", stats.predicted_ltv, "", palette[4]);
        const ltv = stats.predicted_ltv;
        text("ltv-note", `median ${number(ltv.median)}, mean ${number(ltv.mean)}, total ${number(ltv.total)}`);
      }
      if (stats.p_alive_matrix) drawMatrix(stats.p_alive_matrix);
    }
    if (model) showModel(model);
    showValidation(validations && validations.items.length ? validations.items[0] : null);
    showHoldout(holdout ? holdout.items : []);
    const body = document.querySelector("#top-users tbody");
    body.replaceChildren(...top.items.map((u) => {
      const row = document.createElement("tr");
      const link = document.createElement("a");
      link.href = `/dashboard/users/${u.id}`;
      link.textContent = u.id;
      // Without the personal scope people are pseudonymous (README, API keys): no username to show.
      const cells = [link, u.username ?? "–", `${u.address.city}, ${u.address.country.code}`, number(u.profile_score, 1)];
      for (const value of cells) {
        const cell = document.createElement("td");
        if (value instanceof Node) cell.append(value); else cell.textContent = value;
        row.append(cell);
      }
      return row;
    }));
  }

  // A <dl> of [name, value] pairs; each value's element carries its name as data-field.
  function definitions(list, rows) {
    list.replaceChildren(...rows.flatMap(([name, value]) => {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = value;
      detail.dataset.field = name;
      return [term, detail];
    }));
    return list;
  }

  function showModel(model) {
    const bg = model.bgnbd, gg = model.gamma_gamma;
    const rows = [
      ["version", model.version],
      ["fitted", new Date(model.fitted_at).toLocaleString()],
      ["observed until", model.as_of],
      ["customers", number(model.n_customers)],
      ["converged", model.converged ? "yes" : "no"],
      ["held at a bound", [...bg.at_bounds, ...(gg ? gg.at_bounds : [])].join(", ") || "none"],
      ["BG/NBD r, α, a, b", [bg.r, bg.alpha, bg.a, bg.b].map((v) => v.toFixed(4)).join(", ")],
      ["BG/NBD log-likelihood", bg.log_likelihood.toFixed(2)],
      ["Gamma-Gamma p, q, γ", gg ? [gg.p, gg.q, gg.gamma].map((v) => v.toFixed(4)).join(", ") : "not fitted"],
    ];
    rows.push(["scoring model", MODEL_LABELS[model.scoring_model] || model.scoring_model]);
    for (const [name, fitted] of Object.entries(model.models || {})) {
      // Each parameter with its standard error (observed information at the optimum).
      rows.push([`${MODEL_LABELS[name] || name} ± s.e.`, fitted.error ? `not fitted: ${fitted.error}` : withErrors(fitted)]);
    }
    const list = document.createElement("dl");
    list.id = "model-facts";
    document.getElementById("model").replaceChildren(definitions(list, rows));
  }

  const MODEL_LABELS = { bgnbd: "BG/NBD", pareto_nbd: "Pareto/NBD", mbgnbd: "MBG/NBD" };

  function withErrors(fitted) {
    return Object.entries(fitted.parameters).map(([name, value]) => {
      const error = fitted.standard_errors[name];
      return `${name} ${value.toFixed(3)}` + (error === null || error === undefined ? " (±?)" : ` ± ${error.toFixed(3)}`);
    }).join(", ");
  }

  // The tracking plot (Fader, Hardie & Lee's): actual and each model's predicted cumulative repeat
  // purchases, week by week; `blocks` maps a model to its holdout block (weekly, by frequency).
  function tracking(id, blocks) {
    const names = Object.keys(blocks);
    const weekly = blocks[names[0]].weekly;
    draw(id, {
      type: "line",
      data: {
        labels: weekly.map((w) => w.week),
        datasets: [
          { label: "actual", data: weekly.map((w) => w.actual_cumulative), borderColor: "#111827", backgroundColor: "#111827", pointRadius: 0 },
          ...names.map((name, i) => ({
            label: MODEL_LABELS[name] || name, data: blocks[name].weekly.map((w) => w.predicted_cumulative),
            borderColor: palette[i], backgroundColor: palette[i], borderDash: [6, 3], pointRadius: 0,
          })),
        ],
      },
      options: { scales: { x: { title: { display: true, text: "week of the holdout" } },
                           y: { beginAtZero: true, title: { display: true, text: "repeat purchase days" } } } },
    });
  }

  // Figure 4: the holdout's mean repeat purchases per customer by calibration frequency (0..7+).
  function byFrequency(id, blocks) {
    const names = Object.keys(blocks);
    const groups = blocks[names[0]].by_calibration_frequency;
    draw(id, {
      type: "bar",
      data: {
        labels: groups.map((g) => String(g.frequency)),
        datasets: [
          { label: "actual", data: groups.map((g) => g.actual_mean), backgroundColor: "#111827" },
          ...names.map((name, i) => ({ label: MODEL_LABELS[name] || name,
            data: blocks[name].by_calibration_frequency.map((g) => g.predicted_mean), backgroundColor: palette[i] })),
        ],
      },
      options: { scales: { x: { title: { display: true, text: "repeat purchases in calibration" } },
                           y: { beginAtZero: true, title: { display: true, text: "mean in the holdout" } } } },
    });
  }

  function showValidation(job) {
    document.getElementById("validation-empty").hidden = Boolean(job);
    document.getElementById("tracking-chart").hidden = !job;
    if (!job) return;
    const result = job.result;
    const blocks = {};
    for (const [name, fitted] of Object.entries(result.models)) if (fitted.holdout) blocks[name] = fitted.holdout;
    text("validation-note", `calibration to ${result.calibration_end}, holdout to ${result.holdout_end} ` +
         `(${number(result.holdout.weeks, 1)} weeks, ${number(result.holdout.customers)} customers, ` +
         `${number(result.holdout.actual_repeat_purchases)} repeat purchase days)`);
    if (!Object.keys(blocks).length) return;
    tracking("tracking-chart", blocks);
    byFrequency("frequency-chart", blocks);
    const rows = Object.entries(blocks).map(([name, block]) => [MODEL_LABELS[name] || name,
      number(block.predicted_repeat_purchases, 1), number(result.holdout.actual_repeat_purchases), number(block.mae, 3), number(block.rmse, 3)]);
    rows.push([`baseline: ${result.baseline.name}`, number(result.baseline.predicted_repeat_purchases, 1),
               number(result.holdout.actual_repeat_purchases), number(result.baseline.mae, 3), number(result.baseline.rmse, 3)]);
    document.querySelector("#validation-table tbody").replaceChildren(...rows.map((cells) => {
      const row = document.createElement("tr");
      for (const value of cells) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      return row;
    }));
  }

  // The rolling holdout: every check of the scoring model, oldest first (predicted against actual),
  // and the newest check of every model drawn like a validation.
  function showHoldout(items) {
    document.getElementById("holdout-empty").hidden = items.length > 0;
    document.getElementById("holdout-chart").hidden = items.length === 0;
    if (!items.length) return;
    const scoring = items.filter((item) => item.scoring).reverse();
    draw("holdout-chart", {
      type: "line",
      data: {
        labels: scoring.map((item) => `v${item.model_version} (${item.calibration_end} → ${item.holdout_end})`),
        datasets: [
          { label: "actual", data: scoring.map((item) => item.actual_repeat_purchases), borderColor: "#111827", backgroundColor: "#111827" },
          { label: "predicted by the scoring model", data: scoring.map((item) => item.predicted_repeat_purchases), borderColor: palette[0], backgroundColor: palette[0] },
        ],
      },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "repeat purchase days" } } } },
    });
    const newest = items.filter((item) => item.checked_at === items[0].checked_at);
    const blocks = Object.fromEntries(newest.map((item) => [item.model, item]));
    text("holdout-note", `newest: model v${items[0].model_version}, ${items[0].calibration_end} to ${items[0].holdout_end}, ` +
         `MAE ${newest.map((item) => `${MODEL_LABELS[item.model] || item.model} ${number(item.mae, 3)}`).join(", ")}`);
    tracking("rolling-tracking-chart", blocks);
    byFrequency("rolling-frequency-chart", blocks);
  }

  function drawMatrix(matrix) {
    const cells = [];
    matrix.p_alive.forEach((row, i) => row.forEach((value, j) => cells.push({ x: matrix.recency_weeks[j], y: matrix.frequency[i], v: value })));
    const columns = matrix.recency_weeks.length, rows = matrix.frequency.length;
    const step = columns > 1 ? matrix.recency_weeks[1] - matrix.recency_weeks[0] : 1;
    text("matrix-note", `for a customer ${number(matrix.age_weeks, 1)} weeks after their first purchase`);
    draw("matrix-chart", {
      type: "matrix",
      data: {
        datasets: [{
          label: "P(alive)",
          data: cells,
          backgroundColor: (ctx) => {
            const v = ctx.dataset.data[ctx.dataIndex].v;
            return `rgba(37, 99, 235, ${0.08 + 0.92 * v})`; // paler is less likely alive
          },
          width: ({ chart }) => (chart.chartArea || {}).width / columns - 1,
          height: ({ chart }) => (chart.chartArea || {}).height / rows - 1,
        }],
      },
      options: {
        maintainAspectRatio: false,
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { title: () => "", label: (ctx) => {
            const c = ctx.raw;
            return `${c.y} repeat days, last at week ${number(c.x, 1)}: P(alive) ${c.v.toFixed(3)}`;
          } } },
        },
        scales: {
          x: { type: "linear", min: -step / 2, max: matrix.recency_weeks[columns - 1] + step / 2, offset: false,
               title: { display: true, text: "recency (weeks from first to last purchase)" }, grid: { display: false },
               afterBuildTicks: (axis) => { axis.ticks = matrix.recency_weeks.filter((_, j) => j % 4 === 0).map((value) => ({ value })); },
               ticks: { callback: (value) => number(value, 0) } },
          y: { type: "linear", min: -0.5, max: matrix.frequency[rows - 1] + 0.5, offset: false,
               title: { display: true, text: "frequency (repeat purchase days)" }, grid: { display: false },
               // One tick per row, at the row's centre (the axis itself starts half a row lower).
               afterBuildTicks: (axis) => { axis.ticks = matrix.frequency.filter((f) => rows <= 16 || f % 5 === 0).map((value) => ({ value })); } },
        },
      },
    });
  }

  // Runs `work` now and then every `ms`; resolves after the first run, so a second loop can wait for it.
  async function every(ms, work) {
    const run = async () => {
      try {
        const note = await work();
        status(`updated ${new Date().toLocaleTimeString()}` + (note ? ` · ${note}` : ""), false);
      } catch (error) {
        if (!(error instanceof Unauthorized)) status(`update failed: ${error.message}`, true);
      }
    };
    await run();
    return setInterval(run, ms);
  }

  function goToUser() {
    const form = document.getElementById("go-user");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = parseInt(document.getElementById("go-user-id").value, 10);
      if (id > 0) window.location.assign(`/dashboard/users/${id}`);
    });
  }

  async function dashboard() {
    goToUser();
    await every(PIPELINE_MS, async () => {
      const down = await refreshPipeline();
      return down.length ? `not answering: ${down.join(", ")}` : "";
    });
    // After the first pipeline reading, which says whether a model exists.
    await every(CUSTOMERS_MS, () => refreshCustomers(lastPipeline ? lastPipeline.model_version : null));
    document.body.dataset.loaded = "true"; // both views drawn once (the browser tests wait for this)
  }

  // ---------------------------------------------------------------- one user
  async function refreshUser(userId) {
    const [profile, purchases] = await Promise.all([
      getJSON(`/api/users/${userId}/profile`),
      getJSON(`/api/users/${userId}/purchases`),
    ]);
    if (!profile || !purchases) {
      const missing = document.getElementById("user-missing");
      missing.textContent = `No user with id ${userId}.`;
      missing.hidden = false;
      return "";
    }
    const user = profile.user;
    const place = `${user.address.city}, ${user.address.country.name}`;
    // A key without the personal scope sees the user by id only (README, API keys).
    text("user-name", user.full_name === undefined ? place : `${user.full_name} (${user.username}), ${place}`);
    text("p-segment", profile.segment);
    text("p-churn", `${profile.churn_risk.toFixed(1)} %`);
    text("p-alive", profile.p_alive === null ? "–" : profile.p_alive.toFixed(3));
    text("p-ltv", profile.predicted_ltv === null ? "–" : number(profile.predicted_ltv, 2));
    text("p-engagement", profile.engagement.toFixed(1));
    text("p-rfm", profile.rfm ? profile.rfm.code : "–");
    const facts = [
      ["total spent", number(profile.totals.total_spent, 2)],
      ["purchases", profile.totals.purchases],
      ["repeat purchase days", profile.totals.repeat_purchase_days],
      ["days since last purchase", profile.totals.days_since_last_purchase ?? "–"],
      ["events (30 days)", `${profile.totals.events} (${profile.totals.events_last_30_days})`],
      ["sessions (30 days)", profile.sessions
        ? `${profile.sessions.last_30_days}` + (profile.sessions.average_minutes_30d === null ? "" : `, ${number(profile.sessions.average_minutes_30d, 1)} min on average`)
        : "–"],
      ["expected purchases, 90 days", profile.expected_purchases_90d === null ? "–" : profile.expected_purchases_90d.toFixed(2)],
      ["expected average spend", profile.expected_average_spend === null ? "–" : number(profile.expected_average_spend, 2)],
      ["recommendations", profile.recommendations.join(", ") || "–"],
      ["model version", profile.model_version ?? "none"],
      ["computed", new Date(profile.computed_at).toLocaleString()],
    ];
    definitions(document.getElementById("profile-facts"), facts);

    const days = purchases.items;
    document.getElementById("timeline-empty").hidden = days.length > 0;
    let running = 0;
    const cumulative = days.map((d) => (running += d.spent));
    draw("timeline-chart", {
      type: "bar",
      data: {
        labels: days.map((d) => d.day),
        datasets: [
          { type: "bar", label: "spent that day", data: days.map((d) => d.spent), backgroundColor: palette[0], yAxisID: "y" },
          { type: "line", label: "spent in all", data: cumulative, borderColor: palette[3], backgroundColor: palette[3], yAxisID: "y1" },
        ],
      },
      options: {
        scales: {
          y: { beginAtZero: true, position: "left", title: { display: true, text: "per day" } },
          y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "cumulative" } },
        },
      },
    });
    return "";
  }

  async function userPage(userId) {
    goToUser();
    await every(CUSTOMERS_MS, () => refreshUser(userId));
    document.body.dataset.loaded = "true";
  }

  // What the insights page (insights.js) draws with as well.
  return { dashboard, userPage, charts, draw, palette, fmt, status, toLogin, goToUser, Unauthorized };
})();

// Each page says which it is on <body> (no inline script: the Content-Security-Policy allows
// scripts from this server only).
(() => {
  const { page, userId } = document.body.dataset;
  if (page === "dashboard") Pulse.dashboard();
  else if (page === "user") Pulse.userPage(Number(userId));
  else if (page !== "insights") document.getElementById("status").textContent = ""; // insights.js runs that page
})();
