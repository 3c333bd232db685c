/* gradwatch clientside callbacks: the live-update gate, the idempotent delta applier, URL sync. */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  gradwatch: {
    /* Interval tick -> poll tick, only while the tab is visible, the run is live, and the previous
       poll has been answered: Dash drops the response of a request superseded by a newer one, so
       ticks faster than the server would starve the page. A poll unanswered for 10 s is retried. */
    gate: function (nIntervals, liveMeta, lastTick) {
      const noUpdate = window.dash_clientside.no_update;
      if (document.visibilityState === "hidden") { return noUpdate; }
      if (liveMeta && liveMeta.running === false) { return noUpdate; }
      const now = Date.now();
      if (lastTick && liveMeta && liveMeta.answered !== lastTick.n && now - lastTick.at < 10000) { return noUpdate; }
      return {n: nIntervals || 0, at: now};
    },

    /* A chart's relayoutData -> the zoom store, only for an x-axis zoom or reset. Plotly also reports
       autosize and legend changes (every chart once when it is first drawn); passing those to the
       server would re-run the view reducer and make Dash drop a click's request still in flight. */
    zoomEvent: function () {
      const noUpdate = window.dash_clientside.no_update;
      const triggered = (window.dash_clientside.callback_context || {}).triggered || [];
      for (const t of triggered) {
        const data = t.value;
        if (!data || typeof data !== "object") { continue; }
        if (Object.keys(data).some(k => /^xaxis\d*\.(range|autorange)/.test(k))) {
          return {fig: t.prop_id.split(".")[0], data: data, at: Date.now()};
        }
      }
      return noUpdate;
    },

    /* Run page: the charts below the first ones are asked for only once the loss chart has been
       drawn (or after 3 s), so on a fast server their ten figures do not arrive together and make
       the browser draw all of them before showing the first. Returns [stage, interval disabled]. */
    firstPaintStage: function (nIntervals, stage) {
      const noUpdate = window.dash_clientside.no_update;
      if (stage) { return [noUpdate, true]; }
      const drawn = document.querySelector("#fig-loss .main-svg");
      if (drawn || (nIntervals || 0) >= 30) { return [1, true]; }
      return [noUpdate, noUpdate];
    },

    /* A refresh timer's tick, passed on only while the tab is visible (Runs, Compare, Launch pages). */
    visibleTick: function (nIntervals) {
      if (document.visibilityState === "hidden") { return window.dash_clientside.no_update; }
      return nIntervals || 0;
    },

    /* Apply one poll's delta. Each channel's payload extends the figures only if the channel store
       still holds the cursor and revision the server computed it from; then the cursor advances.
       A repeated or late payload therefore never duplicates a point, and nothing is skipped
       because the next poll asks again from the cursor actually shown. */
    applyDelta: function (delta, scalars, layers, hist, signals) {
      const noUpdate = window.dash_clientside.no_update;
      const figs = {
        "fig-loss": noUpdate, "fig-acc": noUpdate, "fig-signals": noUpdate,
        "fig-grad-time": noUpdate, "fig-ratio": noUpdate, "fig-act": noUpdate,
        "fig-hist-grad": noUpdate, "fig-hist-weight": noUpdate,
      };
      /* A cursor channel's payload applies only on top of exactly the cursor and revision it extends. */
      function channel(d, store) {
        if (!d || !store || d.base !== store.cursor || d.rev !== store.rev) { return noUpdate; }
        Object.keys(d.extend || {}).forEach(function (id) { figs[id] = d.extend[id]; });
        return Object.assign({}, store, {cursor: d.to, appended: (store.appended || 0) + (d.added || 0)});
      }
      let newScalars = noUpdate, newLayers = noUpdate, newHist = noUpdate, newSignals = noUpdate;
      if (delta) {
        newScalars = channel(delta.scalars, scalars);
        newSignals = channel(delta.signals, signals);
        newLayers = channel(delta.layers, layers);
        const h = delta.hist;
        if (h && hist && h.rev === hist.rev && h.base && hist.steps &&
            h.base.grad === hist.steps.grad && h.base.weight === hist.steps.weight) {
          Object.keys(h.extend || {}).forEach(function (id) { figs[id] = h.extend[id]; });
          newHist = Object.assign({}, hist, {steps: h.to, appended: (hist.appended || 0) + (h.added || 0)});
        }
      }
      return [figs["fig-loss"], figs["fig-acc"], figs["fig-signals"], figs["fig-grad-time"], figs["fig-ratio"],
              figs["fig-act"], figs["fig-hist-grad"], figs["fig-hist-weight"], newScalars, newLayers, newHist,
              newSignals];
    },

    /* Write the view into the address bar without a navigation, so a copied link reproduces it. */
    syncUrl: function (search) {
      if (typeof search === "string" && search !== window.location.search) {
        window.history.replaceState(window.history.state, "", window.location.pathname + search);
      }
      return "";
    }
  },
});
