// Passkeys (WebAuthn) on the sign-in page, the second step and the account page: asks the
// server for options, hands them to navigator.credentials, posts the answer back as JSON
// with the page's CSRF token. The server (http/passkeys.py) checks everything.
"use strict";

(() => {
  if (!window.PublicKeyCredential || !navigator.credentials) {
    return; // no WebAuthn here: the passkey buttons stay hidden
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (const byte of bytes) {
      text += String.fromCharCode(byte);
    }
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fromBase64url(value) {
    const base64 = value.replace(/-/g, "+").replace(/_/g, "/");
    const text = atob(base64 + "===".slice((base64.length + 3) % 4));
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i += 1) {
      bytes[i] = text.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function descriptors(list) {
    return (list || []).map((item) => ({ ...item, id: fromBase64url(item.id) }));
  }

  function creationOptions(json) {
    return {
      ...json,
      challenge: fromBase64url(json.challenge),
      user: { ...json.user, id: fromBase64url(json.user.id) },
      excludeCredentials: descriptors(json.excludeCredentials),
    };
  }

  function requestOptions(json) {
    return {
      ...json,
      challenge: fromBase64url(json.challenge),
      allowCredentials: descriptors(json.allowCredentials),
    };
  }

  function credentialJSON(credential) {
    const response = credential.response;
    const json = {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      response: { clientDataJSON: toBase64url(response.clientDataJSON) },
    };
    if (response.attestationObject) {
      json.response.attestationObject = toBase64url(response.attestationObject);
      if (response.getTransports) {
        json.response.transports = response.getTransports();
      }
    } else {
      json.response.authenticatorData = toBase64url(response.authenticatorData);
      json.response.signature = toBase64url(response.signature);
      if (response.userHandle) {
        json.response.userHandle = toBase64url(response.userHandle);
      }
    }
    return json;
  }

  function csrfToken() {
    const field = document.querySelector("input[name=csrf_token]");
    return field ? field.value : "";
  }

  class ServerRefusal extends Error {
    constructor(message, redirect) {
      super(message);
      this.redirect = redirect;
    }
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok || data === null) {
      // No description: showError says it in the page's words.
      throw new ServerRefusal((data && data.error_description) || "", data && data.redirect);
    }
    return data;
  }

  function showError(element, error) {
    if (!element) {
      return;
    }
    if (error instanceof ServerRefusal && error.redirect) {
      window.location.assign(error.redirect);
      return;
    }
    // The page's words, in its language (templates/_passkey_error.html).
    const words = element.dataset;
    let message =
      error instanceof ServerRefusal
        ? error.message || words.wentWrong || "Something went wrong. Reload the page and try again."
        : words.notUsed || "The passkey was not used.";
    if (error && error.name === "InvalidStateError") {
      message = words.alreadyHeld || "This device already holds a passkey for your account.";
    }
    element.textContent = message;
    // The class only once there is something to say: an empty, hidden error is no error.
    element.classList.add("error");
    element.hidden = false;
  }

  // -- signing in: the button, and the browser's autofill (conditional mediation) ---------

  async function signIn(button, errorBox, mediation, signal) {
    const options = await post(button.dataset.options);
    const credential = await navigator.credentials.get({
      publicKey: requestOptions(options),
      mediation,
      signal,
    });
    const done = await post(button.dataset.verify, {
      credential: credentialJSON(credential),
      next: button.dataset.next || "",
    });
    window.location.assign(done.redirect);
  }

  function setUpSignIn(button) {
    const errorBox = document.getElementById(button.dataset.error);
    let conditional = null;
    let conditionalSettled = Promise.resolve();
    button.hidden = false;
    button.addEventListener("click", async () => {
      if (conditional) {
        // One WebAuthn request at a time: the autofill's ends before the button's starts.
        conditional.abort();
        conditional = null;
        await conditionalSettled;
      }
      if (errorBox) {
        errorBox.hidden = true;
      }
      button.disabled = true;
      try {
        await signIn(button, errorBox, "optional");
      } catch (error) {
        showError(errorBox, error);
      } finally {
        button.disabled = false;
      }
    });
    if (button.dataset.conditional === "1" && PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then((available) => {
        if (!available) {
          return;
        }
        conditional = new AbortController();
        conditionalSettled = signIn(button, errorBox, "conditional", conditional.signal).catch(
          (error) => {
            // The autofill request is the browser's, not something the user asked for: only
            // a passkey the user picked and the server then refused is worth a word. The
            // browser ending it (the button took over, the page lost focus, no passkey was
            // picked) says nothing on a page where the user may be typing a password.
            if (error instanceof ServerRefusal) {
              showError(errorBox, error);
            }
          },
        );
      });
    }
  }

  // -- the account page: add a passkey ----------------------------------------------------

  function setUpRegistration(form) {
    const button = form.querySelector("button");
    const errorBox = document.getElementById(form.dataset.error);
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errorBox.hidden = true;
      button.disabled = true;
      try {
        const options = await post(form.dataset.options);
        const credential = await navigator.credentials.create({
          publicKey: creationOptions(options),
        });
        const done = await post(form.action, {
          credential: credentialJSON(credential),
          name: form.querySelector("input[name=name]").value,
        });
        window.location.assign(done.redirect);
        window.location.reload();
      } catch (error) {
        showError(errorBox, error);
      } finally {
        button.disabled = false;
      }
    });
  }

  for (const button of document.querySelectorAll("button[data-passkey-sign-in]")) {
    setUpSignIn(button);
  }
  for (const form of document.querySelectorAll("form[data-passkey-register]")) {
    setUpRegistration(form);
  }
})();
