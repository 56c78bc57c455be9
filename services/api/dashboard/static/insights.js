// The insights page: a funnel, the retention triangle and the lifecycle, each asked of the API from its
// form (POST /api/analytics/funnels, GET /api/analytics/retention, GET /api/analytics/lifecycle) with
// the dashboard's session cookie. A long query answers 202 and a job, polled at its Location. A
// problem's field errors are shown next to the form field each names. Charts keep the API's numbers
// as they came (a test compares the two); tables show them rounded as the API rounds them.
"use strict";

(() => {
  const { draw, palette, fmt, status, toLogin, goToUser, Unauthorized } = Pulse;
  const JOB_POLL_MS = 500;
  const JOB_DEADLINE_MS = 10 * 60 * 1000; // a job still queued after this says so instead of waiting on
  const MAX_STEPS = 10, MIN_STEPS = 2;
  const DAY_MS = 86400000;
  // Given in full on every draw: Pulse.draw puts a redrawn chart's options in place of the old ones.
  const BOXED = { responsive: true, maintainAspectRatio: false, animation: false };

  class Refused extends Error {
    constructor(problem, status) {
      super(problem.detail || problem.title || `answered ${status}`);
      this.problem = problem;
    }
  }

  // ------------------------------------------------------------------ asking the API

  async function ask(method, url, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, credentials: "same-origin", headers,
                                         body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 401) toLogin(url);
    let answer = null;
    try { answer = await response.json(); } catch (_) { /* an empty or non-JSON body: said below */ }
    if (!response.ok) throw new Refused(answer || { detail: `${url}: ${response.status} ${response.statusText}` }, response.status);
    return { status: response.status, body: answer, location: response.headers.get("Location"),
             cache: response.headers.get("X-Cache") };
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  // The answer's body: at once (200), or the job's result once it is done (202 + Location).
  async function answer(method, url, body, progress) {
    const first = await ask(method, url, body);
    if (first.status !== 202) return { body: first.body, cache: first.cache };
    const location = first.location || `/api/analytics/jobs/${first.body.id}`;
    const deadline = Date.now() + JOB_DEADLINE_MS;
    for (;;) {
      const job = (await ask("GET", location)).body;
      if (job.status === "done") return { body: job.result, cache: `job ${job.id}` };
      // A failed job's error is a problem like an answer's: its field, when it names one.
      if (job.status === "failed") {
        const error = job.error || {};
        throw new Refused({ detail: error.detail || "the job failed",
                            errors: error.field ? [{ field: error.field, message: error.detail }] : [] }, 422);
      }
      if (Date.now() > deadline) throw new Error(`job ${job.id} is still ${job.status}: look at ${location} later`);
      progress(`job ${job.id} ${job.status}…`);
      await sleep(JOB_POLL_MS);
    }
  }

  // ------------------------------------------------------------------ forms and their errors

  const $ = (id) => document.getElementById(id);
  const value = (id) => $(id).value.trim();

  function element(tag, text, attributes) {
    const made = document.createElement(tag);
    if (text !== undefined && text !== null) made.textContent = text;
    for (const [name, given] of Object.entries(attributes || {})) made.setAttribute(name, given);
    return made;
  }

  function clearErrors(form) {
    for (const spot of form.querySelectorAll(".field-error")) spot.textContent = "";
    for (const field of form.querySelectorAll(".invalid")) field.classList.remove("invalid");
    const general = form.querySelector(".form-error");
    general.textContent = "";
    general.hidden = true;
  }

  // "query.steps[1].where.plan" → the spot for steps[1].where, else steps[1], else steps: the nearest
  // field the form has. The API names query parameters by their name (`from`, not `from_`).
  function spotFor(form, field) {
    let path = field.replace(/^(body|query)\./, "");
    for (;;) {
      const spot = form.querySelector(`.field-error[data-for="${CSS.escape(path)}"]`)
        || form.querySelector(`.field-error[data-for="${CSS.escape(path.replace(/_$/, ""))}"]`);
      if (spot) return spot;
      const shorter = path.replace(/(\.[^.[\]]*|\[\d+\])$/, "");
      if (shorter === path || !shorter) return null;
      path = shorter;
    }
  }

  function showProblem(form, error) {
    const problem = error instanceof Refused ? error.problem : { detail: error.message };
    const unplaced = [];
    for (const { field, message } of problem.errors || []) {
      const spot = spotFor(form, field);
      if (!spot) { unplaced.push(`${field}: ${message}`); continue; }
      spot.textContent = spot.textContent ? `${spot.textContent}; ${message}` : message;
      const input = spot.parentElement.querySelector("input, select");
      if (input) input.classList.add("invalid");
    }
    // The detail says what is wrong as a whole (and names the fields); shown once, above the result.
    const general = form.querySelector(".form-error");
    general.textContent = [problem.detail, ...unplaced].filter(Boolean).join(" · ");
    general.hidden = !general.textContent;
  }

  // A form's run: one at a time (a newer one makes an older answer stale), its state on the panel
  // (`data-state` idle|running|done|error, `data-runs` counting finished runs) for people and tests.
  function panel(name, build, fetchIt, drawIt) {
    const section = $(name), form = $(`${name}-form`), note = $(`${name}-note`);
    let current = 0;
    async function run() {
      const mine = ++current;
      clearErrors(form);
      section.dataset.state = "running";
      note.textContent = "asking…";
      try {
        const query = build(form);
        const started = performance.now();
        const got = await fetchIt(query, (progress) => { if (mine === current) note.textContent = progress; });
        if (mine !== current) return;
        drawIt(got.body, query);
        note.textContent = `answered in ${fmt.format(Math.round(performance.now() - started))} ms` +
          (got.cache ? ` (${got.cache.startsWith("job") ? got.cache : `cache ${got.cache}`})` : "");
        section.dataset.state = "done";
        status(`updated ${new Date().toLocaleTimeString()}`, false);
      } catch (error) {
        if (error instanceof Unauthorized || mine !== current) return;
        note.textContent = "";
        showProblem(form, error);
        section.dataset.state = "error";
      } finally {
        if (mine === current) section.dataset.runs = String(Number(section.dataset.runs) + 1);
      }
    }
    form.addEventListener("submit", (event) => { event.preventDefault(); run(); });
    return run;
  }

  // A form's own check, before asking: shown like the API's field errors.
  function invalid(field, message) {
    return new Refused({ detail: `Invalid fields: ${field}`, errors: [{ field, message }] }, 422);
  }

  const isoDay = (at) => at.toISOString().slice(0, 10);
  const daysAgo = (n) => isoDay(new Date(Date.now() - n * DAY_MS));
  const midnight = (day) => (day ? `${day}T00:00:00+00:00` : undefined);

  // ------------------------------------------------------------------ the funnel

  function stepRow(eventType, where) {
    const row = element("li", null, { class: "step" });
    const type = element("input", null, { class: "event-type", list: "event-types", placeholder: "event type",
                                          size: "14", "aria-label": "event type" });
    type.value = eventType || "";
    const filter = element("input", null, { class: "where", placeholder: "where key=value, …", size: "22",
                                            "aria-label": "where" });
    filter.value = where || "";
    const remove = element("button", "×", { type: "button", class: "secondary remove", title: "remove this step" });
    remove.addEventListener("click", () => {
      if ($("funnel-steps").children.length > MIN_STEPS) { row.remove(); renumber(); }
    });
    const typeBox = element("span", null, { class: "labelled" });
    typeBox.append(type, element("span", null, { class: "field-error", "data-role": "event_type" }));
    const whereBox = element("span", null, { class: "labelled" });
    whereBox.append(filter, element("span", null, { class: "field-error", "data-role": "where" }));
    row.append(typeBox, whereBox, remove, element("span", null, { class: "field-error", "data-role": "step" }));
    return row;
  }

  // Each step's error spots carry its index (the API names `steps[2].event_type`): redone when one goes.
  function renumber() {
    const rows = [...$("funnel-steps").children];
    rows.forEach((row, i) => {
      for (const spot of row.querySelectorAll(".field-error")) {
        const role = spot.dataset.role;
        spot.dataset.for = role === "step" ? `steps[${i}]` : `steps[${i}].${role}`;
      }
    });
    $("funnel-add-step").disabled = rows.length >= MAX_STEPS;
    for (const button of document.querySelectorAll("#funnel-steps .remove")) button.disabled = rows.length <= MIN_STEPS;
  }

  function addStep(eventType, where) {
    if ($("funnel-steps").children.length >= MAX_STEPS) return;
    $("funnel-steps").append(stepRow(eventType, where));
    renumber();
  }

  // `plan=pro, n=5, trial=true, code="5"`: numbers and booleans as JSON has them, quoted text as text
  // (a funnel's where matches the stored value exactly, its type too).
  function parseWhere(text, field) {
    const where = {};
    if (!text) return where;
    for (const pair of text.split(",")) {
      const at = pair.indexOf("=");
      const key = pair.slice(0, at).trim(), raw = pair.slice(at + 1).trim();
      if (at < 1 || !key || !raw) throw invalid(field, `write key=value pairs separated by commas (not "${pair.trim()}")`);
      let parsed = raw;
      if (/^".*"$/.test(raw)) parsed = raw.slice(1, -1);
      else if (raw === "true" || raw === "false") parsed = raw === "true";
      else if (/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(raw)) parsed = Number(raw);
      where[key] = parsed;
    }
    return where;
  }

  function funnelQuery() {
    const steps = [...$("funnel-steps").children].map((row, i) => ({
      event_type: row.querySelector(".event-type").value.trim(),
      where: parseWhere(row.querySelector(".where").value.trim(), `steps[${i}].where`),
    }));
    const amount = Number(value("funnel-window"));
    const body = {
      steps,
      window_seconds: value("funnel-window") && Number.isFinite(amount) ? Math.round(amount * Number(value("funnel-window-unit"))) : null,
      from: midnight(value("funnel-from")) ?? null,
      to: midnight(value("funnel-to")) ?? null,
      breakdown: value("funnel-breakdown") || null,
      cohort: value("funnel-cohort") || null,
    };
    return { body, horizontal: value("funnel-orientation") === "y" };
  }

  function percent(rate, digits) {
    return rate === null || rate === undefined ? "–" : `${(100 * rate).toFixed(digits)} %`;
  }

  // Seconds as a person reads them: 42.5 s, 12.3 min, 5.0 h, 2.3 d.
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return `${fmt.format(seconds)} s`;
    if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
    if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function row(cells, attributes) {
    const made = element("tr", null, attributes);
    for (const cell of cells) {
      const td = cell instanceof Node ? cell : element("td", cell);
      made.append(td);
    }
    return made;
  }

  function drawFunnel(result, query) {
    const steps = result.steps;
    const labels = steps.map((s, i) => `${i + 1}. ${s.event_type}`);
    const breakdown = result.breakdown || null;
    // The values with the most people entering first; "(none)" (no value known) last.
    const values = breakdown ? Object.keys(breakdown).sort((a, b) =>
      (a === "(none)") - (b === "(none)") || breakdown[b][0].persons - breakdown[a][0].persons || a.localeCompare(b)) : [];
    const datasets = breakdown
      ? values.map((v, i) => ({ label: v, data: breakdown[v].map((s) => s.persons), backgroundColor: palette[i % palette.length] }))
      : [{ label: "persons", data: steps.map((s) => s.persons), backgroundColor: palette[0] }];
    const persons = query.horizontal ? "x" : "y";
    draw("funnel-chart", {
      type: "bar",
      data: { labels, datasets },
      options: {
        ...BOXED,
        indexAxis: query.horizontal ? "y" : "x",
        plugins: {
          legend: { display: Boolean(breakdown) },
          tooltip: { callbacks: { afterLabel: (ctx) => {
            const step = (breakdown ? breakdown[ctx.dataset.label] : steps)[ctx.dataIndex];
            return `from previous ${percent(step.conversion_from_previous, 2)}, from first ${percent(step.conversion_from_first, 2)}`;
          } } },
        },
        scales: { [persons]: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "persons" } } },
      },
    });
    $("funnel-table").tBodies[0].replaceChildren(...steps.map((s, i) => row([
      String(i + 1), s.event_type, fmt.format(s.persons), percent(s.conversion_from_previous, 2),
      percent(s.conversion_from_first, 2), duration(s.median_seconds_to_convert),
    ], { "data-step": String(i) })));
    const table = $("funnel-by-value");
    table.hidden = !breakdown;
    if (!breakdown) return;
    // One row per value: persons at each step, and the share of those who entered.
    table.tHead.replaceChildren(row([element("th", query.body.breakdown), ...labels.map((l) => element("th", l))]));
    table.tBodies[0].replaceChildren(...values.map((v) => row([
      element("th", v), ...breakdown[v].map((s, i) => (i === 0 ? fmt.format(s.persons)
        : `${fmt.format(s.persons)} (${percent(s.conversion_from_first, 2)})`)),
    ], { "data-value": v })));
  }

  // ------------------------------------------------------------------ retention

  function retentionQuery() {
    const params = new URLSearchParams();
    const given = { cohort: value("retention-cohort"), period: value("retention-period"),
                    periods: value("retention-periods"), event_type: value("retention-event-type"),
                    from: value("retention-from"), to: value("retention-to"), in_cohort: value("retention-in-cohort") };
    for (const [name, given_] of Object.entries(given)) if (given_) params.set(name, given_);
    return { params, periods: Number(given.periods) || 0 };
  }

  // The cell's colour by its rate: the darker, the more of the cohort came back.
  function heat(cell, rate) {
    cell.style.backgroundColor = `rgba(37, 99, 235, ${(0.06 + 0.9 * rate).toFixed(3)})`;
    cell.style.color = rate >= 0.5 ? "#fff" : "";
  }

  function drawRetention(result, query) {
    const cohorts = result.cohorts;
    const columns = Math.max(query.periods, ...cohorts.map((c) => c.active.length));
    const table = $("retention-table");
    table.tHead.replaceChildren(row([element("th", "cohort"), element("th", "size"),
      ...Array.from({ length: columns }, (_, k) => element("th", `${result.period} ${k}`))]));
    table.tBodies[0].replaceChildren(...cohorts.map((c) => {
      const cells = Array.from({ length: columns }, (_, k) => {
        if (k >= c.active.length) return element("td", "", { class: "future" }); // not begun yet
        const cell = element("td", percent(c.rates[k], 1), { class: "cell", "data-active": String(c.active[k]),
                                                              "data-rate": String(c.rates[k]),
                                                              title: `${fmt.format(c.active[k])} of ${fmt.format(c.size)}` });
        heat(cell, c.rates[k]);
        return cell;
      });
      return row([element("th", c.cohort), element("td", fmt.format(c.size), { class: "size" }), ...cells],
                 { "data-cohort": c.cohort });
    }));
    if (!cohorts.length) $("retention-note").textContent = "No cohort in this range.";
  }

  // ------------------------------------------------------------------ lifecycle

  function lifecycleQuery() {
    const params = new URLSearchParams();
    for (const [name, id] of [["period", "lifecycle-period"], ["from", "lifecycle-from"], ["to", "lifecycle-to"],
                              ["event_type", "lifecycle-event-type"], ["in_cohort", "lifecycle-in-cohort"]]) {
      if (value(id)) params.set(name, value(id));
    }
    return { params };
  }

  const LIFECYCLE = [["new", "#16a34a"], ["returning", "#2563eb"], ["resurrecting", "#d97706"], ["dormant", "#dc2626"]];

  function drawLifecycle(result) {
    const periods = result.periods;
    draw("lifecycle-chart", {
      type: "bar",
      data: {
        labels: periods.map((p) => p.period),
        datasets: LIFECYCLE.map(([name, colour]) => ({ label: name, data: periods.map((p) => p[name]), backgroundColor: colour })),
      },
      options: { ...BOXED, scales: { x: { stacked: true }, y: { stacked: true, ticks: { precision: 0 }, title: { display: true, text: "persons" } } } },
    });
  }

  // ------------------------------------------------------------------ the page

  async function cohortNames() {
    // Saved cohorts to pick from; without any (or before the API has them) the fields stay free text.
    try {
      const listed = (await ask("GET", "/api/cohorts")).body;
      const items = Array.isArray(listed) ? listed : (listed && listed.items) || [];
      $("cohort-names").replaceChildren(...items.map((c) => element("option", null, { value: c.name })));
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
    }
  }

  async function page() {
    goToUser();
    for (const type of ["login", "page_view", "user_purchase"]) addStep(type, "");
    $("funnel-add-step").addEventListener("click", () => addStep("", ""));
    const tomorrow = daysAgo(-1);
    $("funnel-from").value = daysAgo(30);
    $("funnel-to").value = tomorrow;
    $("retention-from").value = daysAgo(7 * 8);
    $("retention-to").value = tomorrow;
    $("lifecycle-from").value = daysAgo(7 * 8);
    $("lifecycle-to").value = tomorrow;
    const runs = [
      panel("funnel", funnelQuery, (q, progress) => answer("POST", "/api/analytics/funnels", q.body, progress), drawFunnel),
      panel("retention", retentionQuery, (q, progress) => answer("GET", `/api/analytics/retention?${q.params}`, undefined, progress), drawRetention),
      panel("lifecycle", lifecycleQuery, (q, progress) => answer("GET", `/api/analytics/lifecycle?${q.params}`, undefined, progress), drawLifecycle),
    ];
    try {
      await Promise.all([cohortNames(), ...runs.map((run) => run())]);
    } catch (error) {
      if (error instanceof Unauthorized) return;
    }
    if ($("status").textContent === "loading…") status("", false); // every panel refused: each says why
    document.body.dataset.loaded = "true"; // the first answers drawn (the browser tests wait for this)
  }

  if (document.body.dataset.page === "insights") page();
})();
