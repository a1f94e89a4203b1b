#!/usr/bin/env node
/*
 * Runs the CDS Hooks sandbox's own code under Node, as the sandbox runs it in a browser: its JWT generator
 * (jwt-generator.js, signing with its key), its prefetch and hook request code (service-exchange.js) and the
 * feedback its card list sends when a card is accepted or overridden (card-list.jsx). The sandbox's files are
 * read, unmodified, from the directory given in the plan (../shared/external-test-data/cds-hooks-sandbox).
 *
 * Like the sandbox's own builds (webpack, jest), its ES modules and JSX are compiled by Babel when loaded,
 * and a .pem import is the file's text. What those files import but the copy does not hold (the sandbox's
 * redux store, actions, reducers and configuration) and the UI kit the card list renders with (never rendered
 * here) are stand-ins (./standins), as the sandbox's jest configuration stands in for them too.
 *
 * Input (standard input): a JSON plan {"sandbox": DIR, "steps": [...]}, each step one of
 *   {"call": {"url", "hook", "fhirServer", "accessToken": {access_token, expires_in} | null, "patientId",
 *             "userId", "prefetch": {key: template}, "context": {key: value}}}
 *   {"accept": {"serviceUrl", "card", "suggestion"}}
 *   {"override": {"serviceUrl", "card", "reason": Coding | null}}
 * Output (standard output): one JSON array, per step {"exchange": the action the sandbox dispatched, "http":
 * every HTTP response the step saw (method, url, status, body)}. The sandbox's console output goes to stderr.
 */

'use strict';

const fs = require('fs');
const path = require('path');
const Module = require('module');
const babel = require('@babel/core');

const HERE = __dirname;
const STANDINS = path.join(HERE, 'standins');

console.log = console.error; // the sandbox logs to the console; standard output carries the results only
console.warn = console.error;

function installLoaders(sandbox) {
  const root = fs.realpathSync(sandbox) + path.sep;
  const inSandbox = (filename) => typeof filename === 'string' && filename.startsWith(root);

  require.extensions['.pem'] = (module, filename) => {
    module.exports = fs.readFileSync(filename, 'utf8');
  };
  const plain = Module._extensions['.js'];
  const compiled = (module, filename) => {
    if (!inSandbox(filename)) {
      plain(module, filename);
      return;
    }
    const { code } = babel.transformFileSync(filename, {
      babelrc: false,
      configFile: false,
      presets: [
        [require.resolve('@babel/preset-env'), { targets: { node: 'current' } }],
        require.resolve('@babel/preset-react'),
      ],
    });
    module._compile(code, filename);
  };
  Module._extensions['.js'] = compiled;
  Module._extensions['.jsx'] = compiled;

  const standIn = {
    // the sandbox's own modules that the copy does not hold
    '../actions/service-exchange-actions': 'actions.js',
    '../../actions/service-exchange-actions': 'actions.js',
    './launch-context-retrieval': 'launch-context-retrieval.js',
    '../config/fhir-config': 'fhir-config.js',
    '../../reducers/helpers/services-filter': 'services-filter.js',
    '../../store/store': 'store.js',
    './card-list.css': 'styles.js',
    // the UI kit the card list renders with (rendering is not what runs here)
    'react-redux': 'react-redux.js',
    'react-markdown': 'component.js',
    'remark-gfm': 'plugin.js',
    'rehype-raw': 'plugin.js',
  };
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function resolveFilename(request, parent, ...rest) {
    if (parent && inSandbox(parent.filename)) {
      if (standIn[request]) {
        return path.join(STANDINS, standIn[request]);
      }
      if (request.startsWith('@mui/')) {
        return path.join(STANDINS, 'component.js');
      }
      if (!request.startsWith('.')) {
        // the sandbox's npm dependencies, installed here from its package.json's ranges
        return require.resolve(request, { paths: [HERE] });
      }
    }
    return resolve.call(this, request, parent, ...rest);
  };
}

async function main() {
  const plan = JSON.parse(fs.readFileSync(0, 'utf8'));
  installLoaders(plan.sandbox);
  const axios = require('axios');
  axios.defaults.proxy = false; // straight to the loopback servers of the test, as a browser would go
  const http = [];
  const record = (response) => {
    http.push({
      method: response.config.method,
      url: response.config.url,
      status: response.status,
      body: response.data,
    });
  };
  axios.interceptors.response.use(
    (response) => {
      record(response);
      return response;
    },
    (error) => {
      if (error.response) {
        record(error.response);
      } else {
        const config = error.config || {};
        http.push({ method: config.method, url: config.url, status: null, error: error.code || String(error) });
      }
      return Promise.reject(error);
    },
  );
  const src = path.join(plan.sandbox, 'src');
  const callServices = require(path.join(src, 'retrieve-data-helpers', 'service-exchange.js')).default;
  const { CardList } = require(path.join(src, 'components', 'CardList', 'card-list.jsx'));
  const store = require(path.join(STANDINS, 'store.js'));

  const results = [];
  for (const step of plan.steps) {
    http.length = 0;
    const dispatched = [];
    if (step.call) {
      const c = step.call;
      const state = {
        hookState: { currentHook: c.hook },
        fhirServerState: { currentFhirServer: c.fhirServer, accessToken: c.accessToken || null },
        patientState: { currentPatient: { id: c.patientId }, currentUser: c.userId },
        cdsServicesState: { configuredServices: { [c.url]: { prefetch: c.prefetch } } },
      };
      const context = Object.entries(c.context).map(([key, value]) => ({ key, value }));
      await callServices((action) => dispatched.push(action), state, c.url, context);
    } else {
      const f = step.accept || step.override;
      const taken = [];
      const list = new CardList({ isDemoCard: false, takeSuggestion: (s) => taken.push(s) });
      const answered = waitForFeedback(axios, `${f.serviceUrl}/feedback`);
      if (step.accept) list.takeSuggestion(f.suggestion, f.card.uuid, f.serviceUrl);
      else list.dismissCard(f.serviceUrl, f.card.uuid, f.reason || undefined);
      await answered;
      dispatched.push(...store.dispatched.splice(0));
      dispatched.push(...taken.map((suggestion) => ({ type: 'TAKE_SUGGESTION', suggestion })));
    }
    results.push({ exchange: dispatched, http: http.slice() });
  }
  process.stdout.write(JSON.stringify(results));
}

function waitForFeedback(axios, url) {
  // sendFeedback does not return axios' promise: the answer is awaited where every response passes
  return new Promise((resolve) => {
    const done = (config) => {
      if (config && config.url === url) {
        axios.interceptors.response.eject(id); // eslint-disable-line no-use-before-define
        resolve();
      }
    };
    const id = axios.interceptors.response.use(
      (response) => {
        done(response.config);
        return response;
      },
      (error) => {
        done(error.config);
        return Promise.reject(error);
      },
    );
  });
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
