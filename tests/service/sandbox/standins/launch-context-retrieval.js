'use strict';
// Stand-in for the sandbox's SMART launch-context retrieval (not in the copy): the service sends no SMART links.
module.exports = (link) => Promise.resolve(link);
