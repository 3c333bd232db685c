// Bundles entry.js into one minified IIFE that sets window.Plotly (what dcc.Graph looks for).
// Two savings over a plain esbuild run, both made at build time on plotly.js's own sources:
// - attribute `description` texts (plot-schema documentation, never read when drawing) become '';
// - components the dashboard's figures never lay out are left unregistered in src/core.js.
//   plotly.js asks for components through Registry.getComponentMethod, a no-op for an absent one.
const fs = require('fs');
const path = require('path');
const esbuild = require('esbuild');

const [outfile] = process.argv.slice(2);
// Kept: annotations, shapes, updatemenus (the log-axis toggle), selections (the cartesian dragbox
// imports it), colorscale, colorbar, legend, fx (hover), modebar.
const UNUSED_COMPONENTS = ['annotations3d', 'images', 'sliders', 'rangeslider', 'rangeselector', 'grid', 'errorbars'];

// `description: 'text'`, `description: 'a' + 'b'` or `description: ['a', 'b'].join(' ')`.
const QUOTED = String.raw`'(?:[^'\\]|\\.)*'`;
const DESCRIPTION = new RegExp(
    String.raw`(\bdescription\s*:\s*)(?:\[[^\]]*?\]\s*\.join\(\s*${QUOTED}\s*\)|${QUOTED}(?:\s*\+\s*${QUOTED})*)`, 'g');

// The whole entry with the comma before it (a description is usually an attribute's last entry),
// else with the comma after it.
const DESCRIPTION_AFTER = new RegExp(String.raw`,\s*` + DESCRIPTION.source, 'g');
const DESCRIPTION_BEFORE = new RegExp(DESCRIPTION.source + String.raw`\s*,`, 'g');

function withoutUnusedComponents(source) {
    let out = source;
    for (const name of UNUSED_COMPONENTS) {
        const line = `    require('./components/${name}'),\n`;
        if (!out.includes(line)) throw new Error(`src/core.js no longer registers ${name} this way: update build.js`);
        out = out.replace(line, '');
    }
    return out;
}

const plotlySources = {
    name: 'plotly-sources',
    setup(build) {
        build.onResolve({ filter: /^culori$/ }, () => ({ path: path.join(__dirname, 'culori.js') }));
        build.onLoad({ filter: /plotly\.js[\\/]src[\\/].*\.js$/ }, async (args) => {
            let source = await fs.promises.readFile(args.path, 'utf8');
            // The whole entry goes where a comma separates it; an object's only entry becomes ''.
            source = source.replace(DESCRIPTION_AFTER, '').replace(DESCRIPTION_BEFORE, '')
                .replace(DESCRIPTION, "$1''");
            if (args.path.endsWith(path.join('plotly.js', 'src', 'core.js'))) source = withoutUnusedComponents(source);
            return { contents: source, loader: 'js' };
        });
    },
};

esbuild.build({
    entryPoints: [path.join(__dirname, 'entry.js')],
    outfile,
    bundle: true,
    minify: true,
    format: 'iife',
    globalName: 'Plotly',
    target: 'es2018',
    legalComments: 'none',
    // maplibre's stylesheet (imported by the registry for map traces) is not bundled: no map traces here.
    loader: { '.css': 'empty' },
    alias: { stream: 'stream-browserify' },
    define: { global: 'window', 'define.amd': 'false' },
    plugins: [plotlySources],
    logLevel: 'warning',
}).catch(() => process.exit(1));
