// MathJax for the math that pymdownx.arithmatex (generic mode) leaves in the pages:
// \( ... \) inline, \[ ... \] display, only inside its `arithmatex` spans.
//
// MathJax itself is vendored under javascripts/mathjax/ (no CDN, so the site renders
// offline): version 3.2.2 from npm (`npm install mathjax@3`), its es5/tex-mml-chtml.js
// copied to javascripts/mathjax/tex-mml-chtml.js and es5/output/chtml/fonts/woff-v2/ to
// javascripts/mathjax/output/chtml/fonts/woff-v2/ (MathJax finds its fonts relative to
// the script), with its Apache-2.0 LICENSE. To update, copy the same files from a newer
// mathjax@3 and run `make site-check`.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Under mkdocs-material, `document$` emits once for the loaded page and again after
// each instant-navigation page change: typeset there, and only there. Typesetting the
// same page twice (at MathJax's startup and again here) nests a second copy of every
// formula inside the first one's hidden assistive MathML, which the MathML input of
// tex-mml-chtml picks up as more math to typeset.
if (typeof document$ !== "undefined") {
  window.MathJax.startup = { typeset: false };
  document$.subscribe(() => {
    MathJax.startup.promise.then(() => {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      return MathJax.typesetPromise();
    });
  });
}
