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

    /* Run page: the charts below the first ones are asked for only once a chart drawn with the page
       (class first-paint) has been drawn (or after 3 s), so on a fast server their figures do not
       arrive together and make the browser draw all of them before showing the first.
       Returns [stage, interval disabled]. */
    firstPaintStage: function (nIntervals, stage) {
      const noUpdate = window.dash_clientside.no_update;
      if (stage) { return [noUpdate, true]; }
      const drawn = document.querySelector(".first-paint .main-svg");
      if (drawn || (nIntervals || 0) >= 30) { return [1, true]; }
      return [noUpdate, noUpdate];
    },

    /* A refresh timer's tick, passed on only while the tab is visible (Runs, Compare, Launch pages). */
    visibleTick: function (nIntervals) {
      if (document.visibilityState === "hidden") { return window.dash_clientside.no_update; }
      return nIntervals || 0;
    },

    /* Apply one poll's delta. chartIds (read from the page: the live-charts store) lists the live
       charts in the order of this callback's outputs and of the channel stores passed after it. A
       chart's payload extends its figure only if its store still holds the cursor and revision the
       server computed it from; then the cursor advances. A repeated or late payload therefore never
       duplicates a point, and nothing is skipped because the next poll asks again from the cursor
       actually shown. Returns [extendData per chart..., channel store per chart...]. */
    applyDelta: function (delta, chartIds) {
      const noUpdate = window.dash_clientside.no_update;
      const ids = Array.isArray(chartIds) ? chartIds : [];
      const stores = Array.prototype.slice.call(arguments, 2);
      const figs = ids.map(function () { return noUpdate; });
      const next = ids.map(function () { return noUpdate; });
      ids.forEach(function (id, i) {
        const d = delta && delta[id];
        const store = stores[i];
        if (!d || !store || d.rev !== store.rev || JSON.stringify(d.base) !== JSON.stringify(store.cursor)) { return; }
        if (d.extend) { figs[i] = d.extend; }
        next[i] = Object.assign({}, store, {cursor: d.to, appended: (store.appended || 0) + (d.added || 0)});
      });
      return figs.concat(next);
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
