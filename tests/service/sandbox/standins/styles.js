'use strict';
// Stand-in for card-list.css (the sandbox's jest maps stylesheets to an identity proxy): class names only.
module.exports = new Proxy({}, { get: (target, name) => (typeof name === 'string' ? name : undefined) });
