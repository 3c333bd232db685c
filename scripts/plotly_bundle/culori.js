// What plotly.js's colour module takes from culori, from culori's tree-shakeable entry points:
// the CSS colour spaces (so any CSS colour string parses) instead of its bundle of every space.
import 'culori/css';
export { converter, formatHex, formatRgb, wcagContrast, wcagLuminance } from 'culori/fn';
