-- zcrm.dc: Zoho's data centres (accounts server and API domain of each) and the
-- relations Zoho documents for delink. Source: ../shared/zoho-api.md sections 1 and 4.
-- UK is left out: its API domain is not confirmed.

return {
    data_centres = {
        us = { accounts = "https://accounts.zoho.com", api_domain = "https://www.zohoapis.com" },
        eu = { accounts = "https://accounts.zoho.eu", api_domain = "https://www.zohoapis.eu" },
        ["in"] = { accounts = "https://accounts.zoho.in", api_domain = "https://www.zohoapis.in" },
        au = { accounts = "https://accounts.zoho.com.au", api_domain = "https://www.zohoapis.com.au" },
        cn = { accounts = "https://accounts.zoho.com.cn", api_domain = "https://www.zohoapis.com.cn" },
        jp = { accounts = "https://accounts.zoho.jp", api_domain = "https://www.zohoapis.jp" },
        ca = { accounts = "https://accounts.zohocloud.ca", api_domain = "https://www.zohoapis.ca" },
        sa = { accounts = "https://accounts.zoho.sa", api_domain = "https://www.zohoapis.sa" },
    },
    -- A sample, not a whitelist: zcrm sends other related lists too.
    relations = {
        Campaigns = { "Leads", "Contacts" },
        Products = { "Leads", "Accounts", "Contacts", "Potentials", "Price_Books" },
        Appointments = { "Services" },
    },
}
