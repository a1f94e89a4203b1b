'use strict';
// Stand-in for a markdown plugin (remark-gfm, rehype-raw): used only when rendering.
module.exports = function standInPlugin() {};
