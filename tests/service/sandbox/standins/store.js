'use strict';
// Stand-in for the sandbox's redux store (not in the copy): keeps what the card list dispatches.
const dispatched = [];
module.exports = { dispatched, dispatch: (action) => { dispatched.push(action); return action; } };
module.exports.default = module.exports;
