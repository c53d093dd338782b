// The arena page: one prompt, two anonymous answers streamed side by side, a vote, the board.
//
// A round is two chat requests sent at once through the API, as any client sends them, each
// with `x-tenshu-conversation: arena` (so each answer is a turn of an arena conversation, whose
// id comes back in `x-tenshu-turn`). Which contender gave which answer stays in this script's
// memory, never in the page, until the vote is stored (preference feedback between the two
// turns); then the names are shown and the leaderboard is read again.

import { api, el, renderMarkdown, serverEvents, toast } from "/static/js/common.js";

const data = JSON.parse(document.getElementById("arena-data").textContent);
const form = document.getElementById("arena-form");
const prompt = document.getElementById("arena-prompt");
const sendButton = document.getElementById("arena-send");
const stopButton = document.getElementById("arena-stop");
const roundNode = document.getElementById("arena-round");
const askedNode = document.getElementById("arena-asked");
const question = roundNode.querySelector(".arena-question");
const voteButtons = [...roundNode.querySelectorAll("button[data-vote]")];
const boardNode = document.getElementById("arena-board");
const scopeSelect = document.getElementById("arena-scope");
const SIDES = ["a", "b"];
const VOTED = { a: "A is better", b: "B is better", tie: "a tie", both_bad: "both bad" };

let round = null; // the round on the page: {sides: {a, b}, controller, running, voted}

// -- a round ------------------------------------------------------------------------------------

function randomOf(list) {
  return list[crypto.getRandomValues(new Uint32Array(1))[0] % list.length];
}

/** The two names to ask: those chosen, else at random, two different ones where there are two. */
function pickPair() {
  const names = data.contenders.map((c) => c.name);
  const other = (name) => {
    const rest = names.filter((n) => n !== name);
    return randomOf(rest.length ? rest : names);
  };
  let a = document.getElementById("arena-pick-a").value;
  let b = document.getElementById("arena-pick-b").value;
  if (!a && !b) a = randomOf(names);
  if (!a) a = other(b);
  if (!b) b = other(a);
  return { a, b };
}

function sideOf(key, model) {
  const card = document.getElementById(`arena-answer-${key}`);
  return {
    key, model, card, text: "", turn: null, backend: null, state: "waiting", ended: false,
    frame: 0,
    title: card.querySelector(".arena-title"),
    status: card.querySelector(".arena-status"),
    body: card.querySelector(".arena-text"),
  };
}

async function startRound() {
  const text = prompt.value.trim();
  if (!text || round?.running) return;
  if (!data.contenders.length) {
    toast("This server serves no chat model to ask.", "bad");
    return;
  }
  const pair = pickPair();
  round = { sides: {}, controller: new AbortController(), running: true, voted: false };
  for (const key of SIDES) {
    const side = sideOf(key, pair[key]);
    round.sides[key] = side;
    side.title.replaceChildren(`Answer ${key.toUpperCase()}`);
    side.card.classList.remove("winner");
    side.body.replaceChildren();
    setStatus(side, "waiting", "");
  }
  for (const button of voteButtons) {
    button.disabled = true;
    button.classList.remove("chosen");
    button.removeAttribute("aria-pressed");
  }
  question.textContent = "Which answer is better? (wait for both)";
  askedNode.textContent = text;
  roundNode.classList.remove("hidden");
  prompt.value = "";
  sendButton.disabled = true;
  stopButton.disabled = false;

  const current = round;
  const messages = [{ role: "user", content: text }];
  await Promise.all(SIDES.map((key) => stream(current.sides[key], messages,
                                               current.controller.signal)));
  current.running = false;
  sendButton.disabled = false;
  stopButton.disabled = true;
  const done = SIDES.every((key) => current.sides[key].state === "done");
  for (const button of voteButtons) button.disabled = !done;
  question.textContent = done ? "Which answer is better?"
    : "Both answers must finish for a vote: ask again.";
  prompt.focus();
}

/** One answer: the streamed chat completion, painted as it arrives. */
async function stream(side, messages, signal) {
  setStatus(side, "writing…", "");
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST", raw: true, signal,
      headers: { "x-tenshu-conversation": "arena" },
      body: { model: side.model, messages, stream: true },
    });
    side.turn = response.headers.get("x-tenshu-turn");
    side.backend = response.headers.get("x-tenshu-backend");
    for await (const data of serverEvents(response)) take(side, data);
    if (side.state !== "failed" && !side.ended) {
      side.state = "failed";
      side.error = "The answer ended early: the connection was cut.";
    }
    if (side.state !== "failed" && !side.turn) {
      side.state = "failed";  // recording is off for this user: there is no turn to vote on
      side.error = "This answer was not recorded (your recording setting is “never”), so it "
        + "cannot take a vote.";
    }
    if (side.state !== "failed") side.state = "done";
  } catch (error) {
    side.state = signal.aborted ? "stopped" : "failed";
    if (!signal.aborted) side.error = error.message;
  }
  paint(side, true);
  const labels = { done: ["done", "good"], stopped: ["stopped", "warn"],
                   failed: ["failed", "bad"] };
  setStatus(side, ...(labels[side.state] || ["failed", "bad"]));
  if (side.error) side.body.append(el("p", { class: "error" }, side.error));
}

/** One server-sent event's data: an OpenAI chunk, an error, or the end. */
function take(side, payload) {
  if (payload === "[DONE]") {
    side.ended = true;
    return;
  }
  let chunk;
  try { chunk = JSON.parse(payload); } catch { return; }
  if (chunk.error) {
    side.state = "failed";
    side.error = chunk.error.message || "The answer failed.";
    return;
  }
  const delta = chunk.choices?.[0]?.delta?.content;
  if (delta) {
    side.text += delta;
    paint(side);
  }
}

/** Render the answer's Markdown, at most once per frame while it streams. */
function paint(side, now = false) {
  if (now) {
    if (side.frame) cancelAnimationFrame(side.frame);
    side.frame = 0;
    renderMarkdown(side.body, side.text);
    return;
  }
  if (side.frame) return;
  side.frame = requestAnimationFrame(() => {
    side.frame = 0;
    renderMarkdown(side.body, side.text);
  });
}

function setStatus(side, text, kind) {
  side.status.textContent = text;
  side.status.className = `badge arena-status ${kind}`;
}

function stopRound() {
  if (round?.running) round.controller.abort();
}

// -- the vote -----------------------------------------------------------------------------------

async function vote(preference, button) {
  const current = round;
  if (!current || current.running || current.voted) return;
  for (const b of voteButtons) b.disabled = true;
  try {
    await api("/tenshu/v1/feedback", {
      method: "POST",
      body: { kind: "preference", turn_id: current.sides.a.turn,
              other_turn_id: current.sides.b.turn, preference },
    });
  } catch (error) {
    toast(`The vote was not stored: ${error.message}`, "bad");
    for (const b of voteButtons) b.disabled = false;
    return;
  }
  current.voted = true;
  button.classList.add("chosen");
  button.setAttribute("aria-pressed", "true");
  question.textContent = `Your vote: ${VOTED[preference]}.`;
  reveal(current, preference);
  await refreshBoard();
}

/** Who gave each answer, now that the vote is in. */
function reveal(current, preference) {
  for (const side of Object.values(current.sides)) {
    const served = side.backend && side.backend !== side.model
      ? el("span", { class: "badge", title: "the model that served this route" },
           `served by ${side.backend}`) : null;
    side.title.replaceChildren(`Answer ${side.key.toUpperCase()} · `,
                               el("span", { class: "arena-name" }, side.model),
                               ...(served ? [" ", served] : []));
    side.card.classList.toggle("winner", preference === side.key);
  }
}

// -- the leaderboard ----------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function refreshBoard() {
  const scope = scopeSelect?.value || "mine";
  try {
    drawBoard(await api(`/tenshu/v1/arena/leaderboard?scope=${encodeURIComponent(scope)}`));
  } catch (error) {
    toast(`The leaderboard could not be read: ${error.message}`, "bad");
  }
}

const whole = (value) => (value === null || value === undefined ? "–" : Math.round(value));

function drawBoard(board) {
  boardNode.replaceChildren();
  if (!board.contenders.length) {
    boardNode.append(el("p", { class: "hint arena-empty" },
                        "No votes yet: ask both answers something, then vote."));
    return;
  }
  const rated = board.contenders.filter((c) => c.rating !== null);
  let lo = Math.min(1000, ...rated.map((c) => c.low));
  let hi = Math.max(1000, ...rated.map((c) => c.high));
  const pad = Math.max(10, (hi - lo) * 0.05);
  lo -= pad;
  hi += pad;
  const x = (value) => ((value - lo) / (hi - lo) * 100).toFixed(2);

  const rows = board.contenders.map((c) => el("tr", { dataset: { name: c.name } },
    el("td", { class: "num" }, c.rank ?? "–"),
    el("td", { class: "arena-contender" }, c.name),
    el("td", { class: "num arena-rating" }, whole(c.rating)),
    el("td", { class: "arena-chart-cell" }, c.rating === null
      ? el("span", { class: "hint" }, "not rated: no games against another")
      : interval(c, x)),
    el("td", { class: "num arena-games" }, c.games),
    el("td", { class: "num arena-optional" }, `${c.wins}–${c.ties}–${c.losses}`),
    el("td", { class: "num arena-optional" }, c.both_bad)));
  boardNode.append(el("div", { class: "table-wrap" }, el("table", { class: "arena-standings" },
    el("thead", {}, el("tr", {},
      el("th", { class: "num", title: "1 + how many are surely better" }, "#"),
      el("th", {}, "Contender"),
      el("th", { class: "num" }, "Rating"),
      el("th", { class: "arena-chart-cell" }, el("span", { class: "arena-axis" },
        el("span", {}, Math.round(lo)), el("span", { class: "arena-optional" }, "95% interval"),
        el("span", {}, Math.round(hi)))),
      el("th", { class: "num" }, "Games"),
      el("th", { class: "num arena-optional", title: "wins–ties–losses (both-bad votes are "
                 + "counted apart, and rated as ties)" }, "W–T–L"),
      el("th", { class: "num arena-optional" }, "Both bad"))),
    el("tbody", {}, rows))));

  const notes = [`${board.votes} vote${board.votes === 1 ? "" : "s"}${
    board.scope === "all" ? " by everyone" : ""}. Bradley–Terry ratings on the Elo scale: 1000 `
    + "(the dashed line) is the average, 400 points apart is 10:1 odds; the intervals come "
    + `from ${board.rounds} bootstrap resamples of the votes.`];
  if (board.skipped) {
    notes.push(`${board.skipped} vote${board.skipped === 1 ? " was" : "s were"} between two `
               + "answers of the same contender: kept, but not rated.");
  }
  if (!board.connected) {
    notes.push("Some contenders were never compared, directly or through others: their "
               + "ratings are not comparable.");
  }
  boardNode.append(el("p", { class: "hint" }, notes.join(" ")));
  if (board.pairs.length) drawPairs(board.pairs);
}

/** A contender's rating as a dot on its 95% interval, on the board's common scale. */
function interval(c, x) {
  const label = `${c.name}: ${whole(c.rating)} (95% interval ${whole(c.low)}–${whole(c.high)})`;
  return svg("svg", { class: "chart arena-ci", viewBox: "0 0 100 16",
                      preserveAspectRatio: "none", role: "img", "aria-label": label },
    svg("title", {}, label),
    svg("line", { class: "grid", x1: x(1000), x2: x(1000), y1: 0, y2: 16 }),
    svg("line", { class: "s1 ci", x1: x(c.low), x2: x(c.high), y1: 8, y2: 8 }),
    svg("line", { class: "s1 dot", x1: x(c.rating), x2: x(c.rating), y1: 8, y2: 8 }));
}

const OUTCOMES = [["a_wins", "s1", "first wins"], ["ties", "s6", "ties"],
                  ["both_bad", "s5", "both bad"], ["b_wins", "s2", "second wins"]];

function drawPairs(pairs) {
  const rows = pairs.map((p) => {
    let at = 0;
    const bars = OUTCOMES.filter(([key]) => p[key]).map(([key, series, what]) => {
      const width = p[key] / p.games * 100;
      const bar = svg("rect", { class: series, x: at.toFixed(2), y: 0, width: width.toFixed(2),
                                height: 10 }, svg("title", {}, `${p[key]} ${what}`));
      at += width;
      return bar;
    });
    const summary = `${p.a} ${p.a_wins}, ties ${p.ties}, both bad ${p.both_bad}, `
      + `${p.b} ${p.b_wins}`;
    return el("tr", { dataset: { pair: `${p.a}|${p.b}` } },
      el("td", {}, el("span", { class: "arena-name" }, p.a), " vs ",
         el("span", { class: "arena-name" }, p.b)),
      el("td", { class: "num" }, p.games),
      el("td", { class: "arena-chart-cell" },
         svg("svg", { class: "chart arena-bar", viewBox: "0 0 100 10",
                      preserveAspectRatio: "none", role: "img", "aria-label": summary },
             ...bars)),
      el("td", { class: "num arena-optional" },
         `${p.a_wins}–${p.ties}–${p.both_bad}–${p.b_wins}`),
      el("td", { class: "num arena-optional", title: `the fitted chance that ${p.a} wins` },
         `${Math.round(p.a_expected * 100)}%`));
  });
  const key = el("p", { class: "hint arena-key" }, ...OUTCOMES.map(([, series, what]) =>
    el("span", {}, el("span", { class: `arena-swatch ${series}` }), what)));
  boardNode.append(el("h3", {}, "Head to head"), key,
    el("div", { class: "table-wrap" }, el("table", { class: "arena-pairs" },
      el("thead", {}, el("tr", {}, el("th", {}, "Pair"), el("th", { class: "num" }, "Games"),
        el("th", { class: "arena-chart-cell" }, "Outcomes"),
        el("th", { class: "num arena-optional",
                   title: "first wins–ties–both bad–second wins" }, "W–T–B–L"),
        el("th", { class: "num arena-optional" }, "P(first wins)"))),
      el("tbody", {}, rows))));
}

// -- wiring -------------------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  startRound();
});
prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    startRound();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") stopRound();
});
stopButton.addEventListener("click", stopRound);
for (const button of voteButtons) {
  button.addEventListener("click", () => vote(button.dataset.vote, button));
}
scopeSelect?.addEventListener("change", refreshBoard);

drawBoard(data.board);
