// The trace types dashboard/figures.py draws (scatter comes with plotly.js/lib/core).
var Plotly = require('plotly.js/lib/core');

Plotly.register([
    require('plotly.js/lib/bar'),
    require('plotly.js/lib/heatmap')
]);

module.exports = Plotly;
