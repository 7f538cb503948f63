-- TLS: the client against the simulator over HTTPS with a self-signed certificate.
-- Peer and host verification are always on: refused without the certificate's CA,
-- refused for a certificate made out to another name, accepted with ca_file. A refused
-- handshake sends no request, so nothing can be delinked.
local zcrm = require "zcrm"
local simulator = require "spec.support.simulator"
local h = require "spec.support.helpers"

local PRODUCT = h.PRODUCT

describe("TLS", function()
    local sim, other -- other: a certificate for crm.example.com only
    local ids = h.ids(3)

    setup(function()
        sim = simulator.start { tls = true }
        other = simulator.start { tls = { hosts = { "crm.example.com" } } }
    end)
    teardown(function()
        if sim then sim:stop() end
        if other then other:stop() end
    end)
    before_each(function()
        sim:reset()
        other:reset()
        sim:seed("Products", PRODUCT, "Price_Books", ids)
        other:seed("Products", PRODUCT, "Price_Books", ids)
    end)

    -- Every id failed with TRANSPORT_ERROR naming the certificate, and the server saw
    -- no request and removed nothing.
    local function assert_refused(s, res, err, why)
        assert.is_table(err)
        assert.equal("TRANSPORT_ERROR", err.code)
        assert.matches(why, err.message)
        h.assert_accounted(res, ids)
        assert.equal(0, res.succeeded)
        for _, e in ipairs(res) do assert.equal("TRANSPORT_ERROR", e.code) end
        assert.equal(0, s:counters().requests)
        assert.same({}, s:removed("Products", PRODUCT, "Price_Books"))
        assert.same(ids, s:relations("Products", PRODUCT, "Price_Books"))
    end

    it("serves https on loopback with a CA file of its own", function()
        assert.matches("^https://127%.0%.0%.1:%d+$", sim.url)
        assert.equal("https://127.0.0.1:" .. sim.port, sim.url)
        assert.matches("^http://127%.0%.0%.1:%d+$", sim.control_url)
        assert.matches("BEGIN CERTIFICATE", require("spec.support.nginx").read_file(sim.ca_file))
    end)

    it("refuses the self-signed certificate without ca_file", function()
        local client = h.client(sim)
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        client:close()
        assert_refused(sim, res, err, "certificate")
    end)

    it("delinks with ca_file = sim.ca_file", function()
        local client = h.client(sim, { ca_file = sim.ca_file })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        client:close()
        assert.is_nil(err)
        h.assert_accounted(res, ids)
        assert.equal(3, res.succeeded)
        assert.same(ids, sim:removed("Products", PRODUCT, "Price_Books"))
        assert.same({}, sim:relations("Products", PRODUCT, "Price_Books"))
        assert.equal("Zoho-oauthtoken spec-token-valid", sim:log()[1].authorization)
    end)

    it("checks the host name: localhost, named in the certificate, is accepted too", function()
        local client = h.client(sim, { ca_file = sim.ca_file, api_domain = "https://localhost:" .. sim.port })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        client:close()
        assert.is_nil(err)
        assert.equal(3, res.succeeded)
    end)

    it("refuses a certificate made out to another host name, even with its CA", function()
        local client = h.client(other, { ca_file = other.ca_file })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        client:close()
        assert_refused(other, res, err, "certificate")
        assert.matches("127%.0%.0%.1", err.message) -- the name that did not match
    end)

    it("refuses a certificate that the given ca_file did not issue", function()
        local client = h.client(sim, { ca_file = other.ca_file })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        client:close()
        assert_refused(sim, res, err, "certificate")
    end)

    it("refreshes the token over https with ca_file, and not without it", function()
        sim:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
        local function oauth_client(ca_file)
            return zcrm.new { refresh = zcrm.oauth_refresh { client_id = "cid", client_secret = "csecret",
                                                              refresh_token = "rtok", accounts_url = sim.url,
                                                              ca_file = ca_file },
                              api_domain = sim.url, ca_file = ca_file }
        end
        local client = oauth_client(nil)
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        client:close()
        assert.is_nil(res)
        assert.equal("TOKEN_REFRESH_FAILED", err.code)
        assert.matches("certificate", err.message)
        assert.equal(0, sim:counters().token_requests)

        client = oauth_client(sim.ca_file)
        res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        client:close()
        assert.is_nil(err)
        assert.equal(3, res.succeeded)
        assert.equal(1, sim:counters().token_grants)
        assert.equal(sim.url, client.api_domain, "the granted api_domain is the https one")
        assert.same(ids, sim:removed("Products", PRODUCT, "Price_Books"))
    end)
end)
